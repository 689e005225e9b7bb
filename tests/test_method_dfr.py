"""DFR's recipe (:mod:`ntonnx.method.dfr`) against a direct scikit-learn computation."""

from __future__ import annotations

import numpy as np
import pytest

from ntonnx.method.dfr import balanced_subsample, fit_dfr, fold_head, l1_logistic
from ntonnx.method.metrics import predict

sklearn = pytest.importorskip("sklearn.linear_model")


def _data(n_classes: int, seed: int = 0, n: int = 240, dim: int = 12):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)) * rng.uniform(0.5, 3.0, dim) + rng.uniform(-2, 2, dim)
    W = np.zeros((n_classes, dim))
    W[:, :4] = rng.standard_normal((n_classes, 4)) * 2
    y = (X @ W.T + rng.gumbel(size=(n, n_classes))).argmax(axis=1)
    return X, y


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("C", [0.05, 0.5])
def test_l1_logistic_matches_sklearn(n_classes, C):
    X, y = _data(n_classes)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    coef, intercept = l1_logistic(Z, y, n_classes=n_classes, C=C)
    ref = sklearn.LogisticRegression(l1_ratio=1.0, C=C, solver="saga", tol=1e-10, max_iter=200_000).fit(Z, y)
    np.testing.assert_allclose(coef, ref.coef_, atol=2e-4)
    # a softmax's intercepts are defined up to a shared constant
    np.testing.assert_allclose(intercept - intercept.mean(), ref.intercept_ - ref.intercept_.mean(), atol=2e-4)
    assert np.array_equal(coef == 0, np.abs(ref.coef_) < 1e-8)


@pytest.mark.parametrize("n_logits", [1, 2, 3])
def test_fit_dfr_on_balanced_groups_is_sklearn_on_standardised_data(n_logits):
    """With equal groups the subsample is the whole set: one C, one draw = sklearn's L1 fit, folded back."""
    n_classes = max(n_logits, 2)
    X, y = _data(n_classes, seed=1, n=300)
    order = np.argsort(y, kind="stable")
    X, y = X[order], y[order]
    counts = np.bincount(y)
    keep = np.concatenate([np.flatnonzero(y == c)[: counts.min() // 2 * 2] for c in range(n_classes)])
    X, y = X[keep], y[keep]
    groups = 2 * y + (np.arange(len(y)) % 2)  # two equal groups per class
    fit = fit_dfr(X, y, groups, n_logits=n_logits, C_grid=(0.3,), n_draws=1)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    ref = sklearn.LogisticRegression(l1_ratio=1.0, C=0.3, solver="saga", tol=1e-10, max_iter=200_000)
    ref.fit((X - mu) / sd, y)
    W, _ = fold_head(ref.coef_, ref.intercept_, mu, sd, n_logits)
    assert fit.W.shape == (n_logits, X.shape[1])
    np.testing.assert_allclose(fit.W, W, atol=1e-3)
    assert np.array_equal(predict(X @ fit.W.T + fit.b), ref.predict((X - mu) / sd))


def test_balanced_subsample_cuts_every_group_to_the_smallest():
    groups = np.repeat([0, 1, 2, 3], [50, 7, 9, 30])
    picked = balanced_subsample(groups, np.random.default_rng(0))
    assert np.array_equal(np.bincount(groups[picked]), [7, 7, 7, 7])
    assert len(np.unique(picked)) == len(picked)


def test_fit_dfr_without_intercept_keeps_the_bias_zero():
    X, y = _data(2, seed=2)
    groups = 2 * y + (X[:, 5] > 0)
    fit = fit_dfr(X, y, groups, n_logits=2, fit_intercept=False, n_draws=2)
    assert np.all(fit.b == 0)
    assert (predict(X @ fit.W.T) == y).mean() > 0.7


def test_fit_dfr_keeps_the_rows_of_classes_without_samples_and_fits_against_them():
    # a 4-class head whose held-out data hold classes 0 and 2 only: rows 1 and 3 must come back
    # bit-identical (the CLI's warning says so) and still be predicted where they win
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((4, 12)) * 3
    y = rng.choice([0, 2], size=240)
    X = centres[y] + rng.standard_normal((240, 12))
    groups = 2 * y + (rng.random(240) < 0.5)
    W0, b0 = centres.copy(), -0.5 * (centres**2).sum(axis=1)
    fit = fit_dfr(X, y, groups, n_logits=4, original=(W0, b0), n_draws=2)
    np.testing.assert_array_equal(fit.W[[1, 3]], W0[[1, 3]])
    np.testing.assert_array_equal(fit.b[[1, 3]], b0[[1, 3]])
    X_other = centres[[1, 3]] + 0.1 * rng.standard_normal((2, 12))
    assert list(predict(X_other @ fit.W.T + fit.b)) == [1, 3]
    assert (predict(X @ fit.W.T + fit.b) == y).mean() > 0.95
    assert set(np.unique(fit.holdout_predictions)) <= {-1, 0, 2}
    blind = fit_dfr(X, y, groups, n_logits=4, n_draws=2)  # without the original: the absent rows are pushed down
    assert predict(X_other @ blind.W.T + blind.b).tolist() != [1, 3]
