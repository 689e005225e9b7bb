"""Large float32 embeddings take the float32 path of the solver; it must land where float64 does."""

import numpy as np

from ntonnx.method.solve import _SMALL, class_balanced_weights, fit_head


def test_float32_solve_matches_the_float64_solve():
    rng = np.random.default_rng(0)
    n, d = 12_000, 720  # above _SMALL entries: products in float32
    assert n * d > _SMALL
    X = np.maximum(rng.standard_normal((n, d), dtype=np.float32), 0)
    teacher = rng.standard_normal((2, d)) * (3 / np.sqrt(d))
    y = (X @ teacher.T + rng.gumbel(size=(n, 2))).argmax(axis=1)
    kwargs = dict(n_logits=2, sample_weight=class_balanced_weights(y), init=(teacher, np.zeros(2)))
    fast = fit_head(X, y, **kwargs)
    exact = fit_head(X.astype(np.float64), y, **kwargs)
    assert fast.converged and exact.converged
    assert abs(fast.loss - exact.loss) <= 1e-7 * exact.loss
    margin = lambda f: X @ (f.W[1] - f.W[0]) + (f.b[1] - f.b[0])  # noqa: E731  (what decides the class)
    np.testing.assert_allclose(margin(fast), margin(exact), atol=1e-3 * np.abs(margin(exact)).max())
