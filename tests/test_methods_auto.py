"""``--method auto``: delta-direction pseudo-groups, the label-free choice among re-fits, end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from ntonnx_cli.main import main

import ntonnx
from ntonnx.activations import Activations
from ntonnx.method.auto import (
    CANDIDATES,
    Candidate,
    choose_refit,
    direction_pseudo_groups,
)
from ntonnx.method.metrics import compute_metrics, predict, worst_group_accuracy
from ntonnx.method.neurons import spuriousness_scores
from ntonnx.method.solve import class_balanced_weights, fit_head, pseudo_group_weights
from ntonnx.method.splits import stratified_split


def _acts(embeddings, labels, W, b, groups=None) -> Activations:
    return Activations(
        embeddings=embeddings,
        logits=embeddings @ W.T + b,
        labels=labels,
        groups=groups,
        model_digest="test",
        provider="none",
    )


def test_pseudo_minority_is_the_top_of_each_class_along_its_delta():
    # class 0: 4 samples, 1 mistake -> the 1 sample with the largest projection on delta[0] = (1, 0)
    # class 1: 3 samples, 2 mistakes -> the 2 largest along delta[1] = (0, 1)
    embeddings = np.array([[0.0, 9.0], [3.0, 0.0], [1.0, 0.0], [2.0, 5.0], [0.0, 1.0], [9.0, 3.0], [0.0, 2.0]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    predictions = np.array([0, 1, 0, 0, 0, 0, 1])
    delta = np.array([[1.0, 0.0], [0.0, 1.0]])
    groups = direction_pseudo_groups(embeddings, labels, predictions, delta)
    np.testing.assert_array_equal(groups, [0, 1, 0, 0, 2, 3, 3])


def test_unscored_class_stays_one_group():
    embeddings = np.array([[1.0], [2.0], [3.0], [4.0]])
    labels = np.array([0, 0, 1, 1])
    delta = np.array([[1.0], [np.nan]])
    groups = direction_pseudo_groups(embeddings, labels, np.array([1, 0, 1, 1]), delta)
    np.testing.assert_array_equal(groups, [0, 1, 2, 2])


def test_worst_group_accuracy_is_the_lowest_group_mean():
    predictions = np.array([0, 0, 1, 1, 1])
    labels = np.array([0, 1, 1, 1, 0])
    assert worst_group_accuracy(predictions, labels, np.array([0, 0, 1, 1, 2])) == 0.0
    assert worst_group_accuracy(predictions, labels, np.array([0, 0, 1, 1, 1])) == pytest.approx(0.5)


def test_pseudo_group_weights_balance_class_by_right_or_wrong():
    labels = np.array([0, 0, 0, 1])
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 1.0]])  # predictions 0, 1, 0, 1
    # groups: (0, right) x2, (0, wrong) x1, (1, right) x1 -> n / (3 * count)
    np.testing.assert_allclose(pseudo_group_weights(logits, labels), [4 / 6, 4 / 3, 4 / 6, 4 / 3])
    # one logit: positive means class 1
    np.testing.assert_allclose(pseudo_group_weights(np.array([[-1.0], [1.0]]), np.array([0, 0])), [1.0, 1.0])


def _separable(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], 100)
    embeddings = rng.normal(size=(200, 3)) + np.where(labels == 1, 3.0, -3.0)[:, None] * [1.0, 0.0, 0.0]
    W, b = np.array([[0.1, 0.0, 0.0], [0.0, 0.0, 0.0]]), np.zeros(2)
    return _acts(embeddings, labels, W, b), (W, b)


def test_the_candidate_that_separates_the_classes_is_chosen_over_a_crushed_one():
    acts, original = _separable()
    delta = np.full((2, 3), np.nan)
    crushed, fitted = Candidate("llr", l2=1e9), Candidate("llr", l2=1e-3)
    chosen = choose_refit(acts, acts, original, delta, fit_intercept=True, candidates=(crushed, fitted))
    # an l2 of 1e9 leaves only the intercept: one class is always wrong (score 0)
    assert chosen.selected == fitted.name
    assert chosen.details["validation"][crushed.name] == 0.0 and chosen.details["validation"][fitted.name] > 0.95


def test_ties_go_to_the_earlier_candidate():
    acts, original = _separable()
    first, second = Candidate("llr", l2=1e-3), Candidate("llr", l2=2e-3)
    chosen = choose_refit(acts, acts, original, np.full((2, 3), np.nan), fit_intercept=True, candidates=(first, second))
    assert chosen.details["validation"][first.name] == chosen.details["validation"][second.name]
    assert chosen.selected == first.name


def test_direction_candidates_put_no_weight_on_the_delta_directions():
    acts, original = _separable()
    delta = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, -1.0]])
    chosen = choose_refit(
        acts, acts, original, delta, fit_intercept=True, candidates=(Candidate("direction", l2=1e-3),)
    )
    np.testing.assert_allclose(chosen.W @ delta.T, 0.0, atol=1e-9)


def test_direction_candidates_are_skipped_without_scores():
    acts, original = _separable()
    chosen = choose_refit(
        acts,
        acts,
        original,
        np.full((2, 3), np.nan),
        fit_intercept=True,
        candidates=(Candidate("direction", l2=1e-3), Candidate("llr", l2=1e-3)),
    )
    assert list(chosen.details["validation"]) == ["llr(l2=0.001)"]


def test_grid_has_every_family():
    assert {c.family for c in CANDIDATES} == {"llr", "direction", "pseudo-group", "afr"}
    assert len({c.name for c in CANDIDATES}) == len(CANDIDATES) == 31


def _linear_data_model(n: int, agree: float, rng: np.random.Generator):
    """The paper's linear model: 4 core dims follow y, 4 spurious dims follow a (a = y w.p. agree)."""
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < agree, y, 1 - y)
    v = rng.standard_normal((n, 16))
    v[:, :4] += (2 * y - 1)[:, None] * 0.5
    v[:, 4:8] += (2 * a - 1)[:, None] * 1.0
    return v, y, 2 * y + a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_beats_class_balanced_refit_on_biased_heldout_data(seed):
    # ERM on data where the attribute agrees with the label 95% of the time leans on it; held-out
    # data just as biased. Judged by worst-group accuracy on group-balanced test data.
    rng = np.random.default_rng(seed)
    v, y, _ = _linear_data_model(2000, 0.95, rng)
    erm = fit_head(v, y, n_logits=2, l2=1e-3)
    original = (erm.W, erm.b)
    heldout = _acts(*_linear_data_model(2000, 0.95, rng)[:2], *original)
    test_v, test_y, test_g = _linear_data_model(2000, 0.5, rng)
    first, second = stratified_split(heldout.labels, 0.5, seed=0)
    identification, tuning = heldout.subset(first), heldout.subset(second)
    scores = spuriousness_scores(identification.embeddings, identification.labels, predict(identification.logits), 2)
    auto = choose_refit(identification, tuning, original, scores.delta, fit_intercept=True)
    llr = fit_head(
        tuning.embeddings,
        tuning.labels,
        n_logits=2,
        sample_weight=class_balanced_weights(tuning.labels),
        init=original,
    )

    def wga(W, b):
        return compute_metrics(predict(test_v @ W.T + b), test_y, test_g).worst_group

    assert wga(auto.W, auto.b) > wga(llr.W, llr.b) + 0.1


def test_tune_auto_writes_the_chosen_head_and_names_it(tiny, tmp_path):
    model_path, data_path, _ = tiny(n_classes=2)
    out = tmp_path / "auto.onnx"
    result = ntonnx.tune(model_path, out, data=data_path, options=ntonnx.TuneOptions(method="auto"))
    assert result.selected in {c.name for c in CANDIDATES}
    assert result.suppressed == [] and result.n_identification > 0
    assert result.to_dict()["selected"] == result.selected
    assert result.verification.max_error <= 1e-5
    metadata = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert metadata["ntonnx.selected"] == result.selected and metadata["ntonnx.method"] == "auto"


def test_cli_tune_auto_reports_its_choice(tiny, tmp_path):
    model_path, data_path, _ = tiny(n_classes=2)
    result = CliRunner().invoke(
        main, ["tune", str(model_path), "--data", str(data_path), "--method", "auto", "-o", str(tmp_path / "o.onnx")]
    )
    assert result.exit_code == 0, result.output
    assert "auto chose: " in result.output  # the method names its choice


def test_default_method_is_still_the_papers():
    options = ntonnx.TuneOptions()
    assert (options.method, options.rule, options.threshold, options.l2) == ("neurontune", "all", 0.0, 1e-3)
