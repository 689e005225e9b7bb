"""The curvature change of variables changes the path of the head solve, never its answer; the gate picks it
only where the embeddings are correlated."""

import numpy as np
import pytest

from ntonnx.method.precondition import CurvatureFactors, kronecker_map
from ntonnx.method.solve import class_balanced_weights, fit_head


def correlated(n: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU features of a low-rank latent with class-dependent means (like pooled CNN features)."""
    rng = np.random.default_rng(seed)
    r = 16
    loadings = rng.standard_normal((r, d)) * (1.0 + np.arange(r))[:, None] ** -0.7 * 1.5
    means = rng.standard_normal((c, r)) * 0.6
    y = rng.integers(0, c, size=n)
    X = np.maximum((means[y] + rng.standard_normal((n, r))) @ loadings + 0.5 * rng.standard_normal((n, d)) - 0.5, 0)
    return X, y


def iid(n: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n, d)), 0)
    teacher = rng.standard_normal((c, d)) * (3 / np.sqrt(d))
    return X, (X @ teacher.T + rng.gumbel(size=(n, c))).argmax(axis=1)


def both_paths(X, y, **kwargs):
    kwargs.setdefault("n_logits", int(y.max()) + 1)
    kwargs.setdefault("sample_weight", class_balanced_weights(y))
    plain = fit_head(X, y, precondition=False, **kwargs)
    kron = fit_head(X, y, precondition=True, **kwargs)
    assert plain.converged and kron.converged
    assert not plain.preconditioned and kron.preconditioned
    return plain, kron


@pytest.mark.parametrize("make", [correlated, iid])
@pytest.mark.parametrize("c", [2, 4])
def test_preconditioned_solve_reaches_the_plain_objective(make, c):
    X, y = make(3000, 96, c, seed=c)
    plain, kron = both_paths(X, y)
    assert kron.loss == pytest.approx(plain.loss, rel=1e-8)
    np.testing.assert_allclose(X @ kron.W.T + kron.b, X @ plain.W.T + plain.b, atol=2e-3)


def test_preconditioning_keeps_suppression_anchor_and_no_intercept():
    X, y = correlated(2000, 48, 3, seed=5)
    rng = np.random.default_rng(5)
    init = (rng.standard_normal((3, 48)) * 0.1, rng.standard_normal(3))
    suppressed = np.array([0, 7, 30])
    kwargs = dict(suppressed=suppressed, init=init, anchor_strength=0.05, fit_intercept=False)
    plain, kron = both_paths(X, y, **kwargs)
    np.testing.assert_array_equal(kron.W[:, suppressed], 0.0)
    np.testing.assert_array_equal(kron.b, 0.0)
    assert kron.loss == pytest.approx(plain.loss, rel=1e-8)


def test_preconditioning_a_single_logit_head_reaches_the_plain_objective():
    X, y = correlated(2000, 64, 2, seed=6)
    plain, kron = both_paths(X, y, n_logits=1)
    assert kron.W.shape == (1, 64)
    assert kron.loss == pytest.approx(plain.loss, rel=1e-8)


def test_float32_preconditioned_solve_matches_float64_within_float32_rounding():
    X, y = correlated(12_000, 720, 2, seed=7)  # 8.6M entries: products in float32
    kwargs = dict(n_logits=2, sample_weight=class_balanced_weights(y))
    fast = fit_head(X.astype(np.float32), y, precondition=True, **kwargs)
    exact = fit_head(X, y, precondition=False, **kwargs)
    assert fast.preconditioned and fast.converged
    assert abs(fast.loss - exact.loss) <= 1e-6 * exact.loss


def test_gate_preconditions_correlated_embeddings_only():
    Xc, yc = correlated(3000, 256, 2, seed=8)
    Xi, yi = iid(3000, 256, 2, seed=8)
    assert fit_head(Xc, yc, n_logits=2, sample_weight=class_balanced_weights(yc)).preconditioned
    assert not fit_head(Xi, yi, n_logits=2, sample_weight=class_balanced_weights(yi)).preconditioned
    few = slice(0, 600)  # fewer than 4 rows per column: declined whatever the correlation
    assert not fit_head(Xc[few], yc[few], n_logits=2, sample_weight=class_balanced_weights(yc[few])).preconditioned


def test_kronecker_gradient_map_is_the_adjoint_of_the_weight_map():
    # L-BFGS in U is the plain problem only if d<f(Θ0 + M U), V> = <grad f, M V>, i.e. gradient = Mᵀ
    rng = np.random.default_rng(9)
    a, g = rng.standard_normal((3, 3)), rng.standard_normal((6, 10))
    factors = CurvatureFactors(softmax=a @ a.T, gram=g.T @ g, shrinkage=0.1)
    change = kronecker_map(factors, damping=1e-3)
    u, grad = rng.standard_normal((3, 10)), rng.standard_normal((3, 10))
    assert np.sum(change.weights(u) * grad) == pytest.approx(np.sum(u * change.gradient(grad)), rel=1e-10)


def test_gate_declines_uncorrelated_embeddings_on_a_first_look_of_few_rows(monkeypatch):
    # the full 1024-row factors cost a SYRK of the size of the Gram: nearly uncorrelated embeddings
    # must be declined on the 256-row first look, correlated ones must still get the full estimate
    from ntonnx.method import solve

    looked_at: list[int] = []
    real = solve.curvature_factors

    def counting(z, *args, **kwargs):
        looked_at.append(len(z))
        return real(z, *args, **kwargs)

    monkeypatch.setattr(solve, "curvature_factors", counting)
    Xi, yi = iid(3000, 256, 2, seed=10)
    assert not fit_head(Xi, yi, n_logits=2, sample_weight=class_balanced_weights(yi)).preconditioned
    assert looked_at == [256]
    looked_at.clear()
    Xc, yc = correlated(3000, 256, 2, seed=10)
    assert fit_head(Xc, yc, n_logits=2, sample_weight=class_balanced_weights(yc)).preconditioned
    assert looked_at == [256, 1024]
