"""``pgdfr``: label-free DFR on bias-model pseudo-groups, its gate and its guard."""

from __future__ import annotations

import numpy as np
import pytest

from ntonnx.method.dfr import fit_dfr
from ntonnx.method.metrics import predict
from ntonnx.method.pgdfr import fit_pgdfr
from ntonnx.method.pseudo_groups import bias_model_groups
from ntonnx.method.solve import class_balanced_weights, fit_head


def _planted(n: int, agree: float, rng: np.random.Generator, n_core: int = 8, n_spu: int = 8, n_noise: int = 48):
    """The paper's linear model: core dims follow y (weakly), spurious dims follow a (strongly)."""
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < agree, y, 1 - y)
    x = rng.standard_normal((n, n_core + n_spu + n_noise))
    x[:, :n_core] += (2 * y - 1)[:, None] * 0.4
    x[:, n_core : n_core + n_spu] += (2 * a - 1)[:, None] * 1.0
    return x, y, a


def _wga(W, b, x, y, a):
    correct = predict(x @ W.T + b) == y
    return min(correct[(y == i) & (a == j)].mean() for i in (0, 1) for j in (0, 1))


@pytest.mark.parametrize(("seed", "refit"), [(0, "weighted"), (1, "weighted"), (0, "subsample")])
def test_pgdfr_raises_worst_group_where_a_class_balanced_refit_does_not(seed, refit):
    rng = np.random.default_rng(seed)
    x, y, _ = _planted(4000, 0.95, rng)
    erm = fit_head(x, y, n_logits=1, l2=1e-4)
    xh, yh, _ = _planted(800, 0.95, rng)
    xt, yt, at = _planted(4000, 0.5, rng)
    llr = fit_head(xh, yh, n_logits=1, sample_weight=class_balanced_weights(yh), l2=1e-3, init=(erm.W, erm.b))
    fit = fit_pgdfr(xh, yh, (erm.W, erm.b), seed=seed, refit=refit)
    base, balanced, ours = (
        _wga(erm.W, erm.b, xt, yt, at),
        _wga(llr.W, llr.b, xt, yt, at),
        _wga(fit.W, fit.b, xt, yt, at),
    )
    assert fit.branch == f"pseudo-group {'weighted' if refit == 'weighted' else 'dfr'}" and not fit.kept_original
    assert balanced < base + 0.05  # the class-balanced re-fit keeps the shortcut
    assert ours > base + 0.25 and ours > balanced + 0.25


def test_pgdfr_subsamples_when_there_are_no_more_samples_than_dimensions():
    # n <= dim + 1: any labelling is separable and weights lose their grip, so DFR's subsampling
    rng = np.random.default_rng(7)
    x, y, _ = _planted(3000, 0.95, rng, n_noise=48)
    erm = fit_head(x, y, n_logits=1, l2=1e-4)
    wide = _planted(65, 0.95, rng, n_noise=48)[:2]
    tall = _planted(400, 0.95, rng, n_noise=48)[:2]
    assert fit_pgdfr(*wide, (erm.W, erm.b), guard=False, n_bags=1).branch == "pseudo-group dfr"
    assert fit_pgdfr(*tall, (erm.W, erm.b), guard=False, n_bags=1).branch == "pseudo-group weighted"


def test_pgdfr_averages_the_heads_of_independent_pseudo_group_inferences():
    rng = np.random.default_rng(2)
    x, y, _ = _planted(3000, 0.95, rng)
    erm = fit_head(x, y, n_logits=1, l2=1e-4)
    xh, yh, _ = _planted(600, 0.95, rng)
    bagged = fit_pgdfr(xh, yh, (erm.W, erm.b), seed=5, n_bags=3, guard=False)
    singles = [fit_pgdfr(xh, yh, (erm.W, erm.b), seed=5 + 7919 * k, n_bags=1, guard=False) for k in range(3)]
    assert len(bagged.l2) == 3 and bagged.l2 == [single.l2[0] for single in singles]
    np.testing.assert_allclose(bagged.W, np.mean([single.W for single in singles], axis=0), rtol=1e-12)
    np.testing.assert_allclose(bagged.b, np.mean([single.b for single in singles], axis=0), rtol=1e-12)
    assert not np.allclose(singles[0].W, singles[1].W)  # the bags differ: there is something to average


def test_pgdfr_gate_takes_the_class_balanced_refit_on_balanced_data():
    rng = np.random.default_rng(3)
    x, y, _ = _planted(4000, 0.95, rng)
    erm = fit_head(x, y, n_logits=2, l2=1e-4)
    xh, yh, _ = _planted(800, 0.5, rng)
    fit = fit_pgdfr(xh, yh, (erm.W, erm.b))
    assert fit.branch == "class-balanced" and not fit.kept_original
    assert fit.gate_refit - fit.gate_original > 0.05
    assert fit.W.shape == (2, x.shape[1])


def test_pgdfr_gate_opens_when_the_original_is_confidently_wrong_on_the_held_out_data():
    # the second sign alone (the re-fit-gain sign disabled): an original head trained where the
    # shortcut holds is far more confident than accurate on group-balanced data, not on biased data
    rng = np.random.default_rng(6)
    x, y, _ = _planted(4000, 0.95, rng)
    erm = fit_head(x, y, n_logits=1, l2=1e-4)
    balanced = _planted(800, 0.5, rng)[:2]
    biased = _planted(800, 0.95, rng)[:2]
    opened = fit_pgdfr(*balanced, (erm.W, erm.b), gate_margin=np.inf)
    shut = fit_pgdfr(*biased, (erm.W, erm.b), gate_margin=np.inf)
    assert opened.branch == "class-balanced" and opened.confidence_gap > 0.10
    assert shut.branch == "pseudo-group weighted" and shut.confidence_gap < 0.10


def test_guard_keeps_the_original_head_when_the_refit_is_worse():
    """A robust original head (the core direction) and too little data for a re-fit to match it."""
    rng = np.random.default_rng(0)
    n_core, dim = 100, 200
    y = rng.integers(0, 2, 120)
    a = np.where(rng.random(120) < 0.95, y, 1 - y)
    x = rng.standard_normal((120, dim))
    x[:, :n_core] += (2 * y - 1)[:, None] * 0.25
    x[:, n_core] += (2 * a - 1) * 2.0
    W = np.zeros((1, dim))
    W[0, :n_core] = 0.5
    fit = fit_pgdfr(x, y, (W, np.zeros(1)))
    assert fit.kept_original and fit.guard_refit < fit.guard_original
    np.testing.assert_array_equal(fit.W, W)
    unguarded = fit_pgdfr(x, y, (W, np.zeros(1)), guard=False)
    assert not unguarded.kept_original and not np.array_equal(unguarded.W, W)


def test_bias_model_finds_the_planted_minority_and_dfr_on_it_nears_group_labels():
    rng = np.random.default_rng(4)
    x, y, a = _planted(800, 0.95, rng)
    pseudo = bias_model_groups(x, y, 2)
    truth = a != y
    precision = (pseudo.minority & truth).sum() / pseudo.minority.sum()
    recall = (pseudo.minority & truth).sum() / truth.sum()
    assert precision > 0.8 and recall > 0.8
    xt, yt, at = _planted(4000, 0.5, rng)
    with_labels = fit_dfr(x, y, 2 * y + a, n_logits=1)
    without = fit_dfr(x, y, pseudo.groups, n_logits=1)
    assert _wga(without.W, without.b, xt, yt, at) > _wga(with_labels.W, with_labels.b, xt, yt, at) - 0.05


def test_pseudo_groups_for_many_classes_are_class_by_attribute_cells():
    """Three classes, each with an attribute value shared across classes; minorities carry another class's."""
    rng = np.random.default_rng(5)
    n, k = 1500, 3
    y = rng.integers(0, k, n)
    a = np.where(rng.random(n) < 0.9, y, (y + rng.integers(1, k, n)) % k)
    x = rng.standard_normal((n, 30))
    x[np.arange(n), y] += 0.6
    for j in range(4):  # each attribute value in 4 dims: the bias model's errors are then the minority
        x[np.arange(n), 10 + 4 * a + j] += 2.0
    pseudo = bias_model_groups(x, y, k)
    assert set(np.unique(pseudo.groups // k)) == {0, 1, 2}
    truth = a != y
    assert (pseudo.minority & truth).sum() / max(pseudo.minority.sum(), 1) > 0.8
    attribute = pseudo.groups % k
    assert (attribute[pseudo.minority & truth] == a[pseudo.minority & truth]).mean() > 0.8


def _robust_linear_model(tmp_path):
    """The guard's case above as files: a one-Gemm model whose input is the embedding, and its data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n_core, dim, n = 100, 200, 120
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.95, y, 1 - y)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[:, :n_core] += ((2 * y - 1)[:, None] * 0.25).astype(np.float32)
    x[:, n_core] += ((2 * a - 1) * 2.0).astype(np.float32)
    W = np.zeros((1, dim), np.float32)
    W[0, :n_core] = 0.5
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"], transB=1)],
        "robust",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.zeros(1, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=x, labels=y)
    return tmp_path / "m.onnx", tmp_path / "d.npz", W


def test_cli_keeps_the_original_head_exits_7_and_force_write_overrides(tmp_path):
    import json

    import onnx
    from click.testing import CliRunner
    from ntonnx_cli.main import main

    from ntonnx.graph.heads import locate_head, read_head

    model, data, W = _robust_linear_model(tmp_path)
    runner = CliRunner()
    kept = runner.invoke(
        main, ["tune", str(model), "--data", str(data), "--method", "pgdfr", "-o", str(tmp_path / "k.onnx"), "--json"]
    )
    assert kept.exit_code == 7, kept.output
    assert json.loads(kept.stdout)["kept_original"] is True
    assert [line for line in kept.stderr.splitlines() if "kept the original head" in line]
    written = onnx.load(tmp_path / "k.onnx")
    np.testing.assert_array_equal(read_head(written, locate_head(written))[0], W)

    forced = runner.invoke(
        main,
        ["tune", str(model), "--data", str(data), "--method", "pgdfr", "--force-write", "-o", str(tmp_path / "f.onnx")],
    )
    assert forced.exit_code == 0, forced.output
    written = onnx.load(tmp_path / "f.onnx")
    assert not np.array_equal(read_head(written, locate_head(written))[0], W)


@pytest.mark.parametrize("refit", ["subsample", "weighted"])
def test_pgdfr_keeps_the_rows_of_classes_without_samples(refit):
    rng = np.random.default_rng(8)
    x, y, _ = _planted(300, 0.95, rng, n_noise=8)
    W0, b0 = rng.standard_normal((3, x.shape[1])), rng.standard_normal(3)  # a 3-class head; data of classes 0, 1
    fit = fit_pgdfr(x, y, (W0, b0), guard=False, refit=refit, n_bags=1, gate_margin=np.inf, confidence_gap=np.inf)
    np.testing.assert_array_equal(fit.W[2], W0[2])
    assert fit.b[2] == b0[2]
