"""The ``logit`` reading of NeuronTune's scores recovers planted spurious neurons where ``all`` cannot."""

from __future__ import annotations

import numpy as np
import pytest

from ntonnx.method.metrics import predict
from ntonnx.method.neurons import NeuronScores, select_logit, select_spurious, spuriousness_scores
from ntonnx.method.pseudo_groups import bias_model_groups
from ntonnx.method.solve import fit_head

SPURIOUS = set(range(8, 16))


def _sample(n: int, rng: np.random.Generator, kind: str, agree: float = 0.95):
    """benchmarks/synthetic.py's data model: 8 core, 8 spurious (dims 8-15), 48 noise dims."""
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < agree, y, 1 - y)
    v = rng.standard_normal((n, 64))
    if kind == "signed":
        v[:, :8] += (2 * y - 1)[:, None] * 0.6
        v[:, 8:16] += (2 * a - 1)[:, None] * 1.0
    else:
        v[:, :8] += 0.6 * np.where(np.arange(8) < 4, y[:, None] == 0, y[:, None] == 1)
        v[:, 8:16] += 1.0 * np.where(np.arange(8) < 4, a[:, None] == 0, a[:, None] == 1)
        v = np.maximum(v, 0.0)
    return v, y


@pytest.mark.parametrize("kind", ["signed", "relu"])
@pytest.mark.parametrize("n_logits", [1, 2])
def test_logit_rule_on_pseudo_minority_recovers_the_planted_neurons(kind, n_logits):
    precision, recall = [], []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x, y = _sample(4000, rng, kind)
        erm = fit_head(x, y, n_logits=n_logits, l2=1e-4)
        xi, yi = _sample(2000, rng, kind)
        paper = spuriousness_scores(xi, yi, predict(xi @ erm.W.T + erm.b), 2)
        assert len(SPURIOUS & set(select_spurious(paper, "all").tolist())) == 0  # the paper's rule: none
        # scores on the bias model's pseudo-minority instead of the model's own (noise-driven) mistakes
        attribute = bias_model_groups(xi, yi, 2).groups % 2
        chosen = set(select_logit(spuriousness_scores(xi, yi, attribute, 2), erm.W).tolist())
        precision.append(len(chosen & SPURIOUS) / max(len(chosen), 1))
        recall.append(len(chosen & SPURIOUS) / len(SPURIOUS))
    assert np.mean(precision) >= 0.8 and np.mean(recall) >= 0.8


def test_logit_rule_reads_delta_against_each_class_logit():
    # neuron 0 moves towards the other class on both classes' mistakes, neuron 1 only on class 0's

    scores = NeuronScores(
        delta=np.array([[1.0, 1.0], [-1.0, 1.0]]),
        n_wrong=np.array([10, 10]),
        n_right=np.array([90, 90]),
        stderr=np.full((2, 2), 0.1),
    )
    W = np.array([[-1.0, -1.0], [1.0, 1.0]])  # both neurons vote for class 1
    assert select_logit(scores, W).tolist() == [0]
    assert select_logit(scores, W[1:]).tolist() == [0]  # one logit = [0, W]
    assert select_logit(scores, W, threshold=20.0).tolist() == []
