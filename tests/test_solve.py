"""The head solver: class balance, separable data, suppression, the one-logit case."""

import numpy as np
import pytest

from ntonnx.method.solve import afr_weights, class_balanced_weights, fit_head, group_balanced_weights


def test_class_balanced_weights_give_each_class_the_same_total():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    weights = class_balanced_weights(labels)
    totals = [weights[labels == y].sum() for y in range(3)]
    np.testing.assert_allclose(totals, [10 / 3] * 3)
    assert weights.mean() == pytest.approx(1.0)


def test_group_balanced_weights_ignore_class():
    groups = np.array([3, 3, 3, 1])
    np.testing.assert_allclose(group_balanced_weights(groups), [4 / 6, 4 / 6, 4 / 6, 2.0])


def test_separable_data_is_separated():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(-2, 0.5, size=(50, 3)), rng.normal(2, 0.5, size=(50, 3))])
    y = np.repeat([0, 1], 50)
    fit = fit_head(X, y, n_logits=2, l2=1e-3)
    assert fit.converged
    assert ((X @ fit.W.T + fit.b).argmax(axis=1) == y).all()


def test_class_balancing_moves_the_boundary_towards_the_majority():
    # 1-D, overlapping classes, 9:1 imbalance: unweighted favours class 0, balanced splits the middle.
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, 900), rng.normal(2, 1, 100)])[:, None]
    y = np.repeat([0, 1], [900, 100])
    plain = fit_head(X, y, n_logits=1, l2=0.0)
    balanced = fit_head(X, y, n_logits=1, l2=0.0, sample_weight=class_balanced_weights(y))
    boundary = lambda f: -f.b[0] / f.W[0, 0]  # noqa: E731
    assert boundary(plain) > 2.0  # pushed past the minority mean
    assert boundary(balanced) == pytest.approx(1.0, abs=0.2)  # halfway between the means


def test_single_logit_matches_scikit_learn_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 5)) * [1, 2, 3, 4, 5] + 1
    y = (X[:, 0] + rng.normal(size=400) > 1).astype(int)
    l2 = 1e-2
    fit = fit_head(X, y, n_logits=1, l2=l2)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    ref = sklearn.LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit((X - mu) / sd, y)
    np.testing.assert_allclose(fit.W[0], ref.coef_[0] / sd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.b[0], ref.intercept_[0] - (ref.coef_[0] / sd) @ mu, rtol=1e-4, atol=1e-6)


def test_suppressed_neurons_get_zero_weight_and_are_not_used():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    y = (X[:, 2] > 0).astype(int)  # only neuron 2 is informative
    fit = fit_head(X, y, n_logits=2, suppressed=np.array([2]))
    np.testing.assert_array_equal(fit.W[:, 2], [0.0, 0.0])
    accuracy = ((X @ fit.W.T + fit.b).argmax(axis=1) == y).mean()
    assert accuracy < 0.65  # without neuron 2 the task is guesswork


def test_no_intercept_keeps_bias_zero():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, 3)) + 5
    y = (X[:, 0] > 5).astype(int)
    fit = fit_head(X, y, n_logits=2, fit_intercept=False)
    np.testing.assert_array_equal(fit.b, [0.0, 0.0])


def test_afr_weights_favour_samples_the_model_gets_wrong():
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    labels = np.array([0, 0, 1, 1])  # samples 1 and 2 are mistakes
    weights = afr_weights(logits, labels, gamma=4.0)
    assert weights[1] > weights[0] and weights[2] > weights[3]
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
