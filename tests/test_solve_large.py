"""Large float32 embeddings take the float32 path of the solver; it must land where float64 does."""

import numpy as np

from ntonnx.method.solve import _SMALL, class_balanced_weights, fit_head


def _float32_problem(n: int = 12_000, d: int = 720, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n, d), dtype=np.float32), 0)
    teacher = rng.standard_normal((2, d)) * (3 / np.sqrt(d))
    y = (X @ teacher.T + rng.gumbel(size=(n, 2))).argmax(axis=1)
    return X, y, dict(n_logits=2, sample_weight=class_balanced_weights(y), init=(teacher, np.zeros(2)))


def test_float32_solve_matches_the_float64_solve():
    X, y, kwargs = _float32_problem()  # above _SMALL entries: products in float32
    assert X.size > _SMALL
    fast = fit_head(X, y, **kwargs)
    exact = fit_head(X.astype(np.float64), y, **kwargs)
    assert fast.converged and exact.converged
    assert abs(fast.loss - exact.loss) <= 1e-7 * exact.loss
    margin = lambda f: X @ (f.W[1] - f.W[0]) + (f.b[1] - f.b[0])  # noqa: E731  (what decides the class)
    np.testing.assert_allclose(margin(fast), margin(exact), atol=1e-3 * np.abs(margin(exact)).max())


def test_the_head_does_not_depend_on_how_many_threads_shared_the_passes(monkeypatch):
    import ntonnx.method.solve as solve

    X, y, kwargs = _float32_problem()
    assert X.nbytes >= 4 * solve._CHUNKS * solve._BLOCK_BYTES, "too small to be shared among threads"
    heads = []
    for cores in (1, 2, 4):
        monkeypatch.setattr(solve, "_usable_cores", lambda cores=cores: cores)
        heads.append(fit_head(X, y, **kwargs))
    for other in heads[1:]:
        np.testing.assert_array_equal(other.W, heads[0].W)
        np.testing.assert_array_equal(other.b, heads[0].b)


def test_a_line_search_lost_in_float32_noise_ends_the_run_at_the_best_point():
    from ntonnx.method.solve import _NoiseFloorReached, _NoiseFloorWatch

    calls = []

    def rough(u, precise):  # flat to 1e-10: what float32 products make of the loss near its optimum
        calls.append(u)
        return 1.0 + 1e-10 * np.sin(len(calls)), np.full(3, 1e-6)

    watch = _NoiseFloorWatch(rough, precise=False)
    watch(np.zeros(3))
    watch.iteration_done(type("R", (), {"fun": 1.0})())
    raised = False
    try:
        for k in range(1, 30):
            watch(np.full(3, float(k)))
    except _NoiseFloorReached:
        raised = True
    assert raised and len(calls) == 1 + _NoiseFloorWatch.STALL_EVALUATIONS
    best = watch.best_result()
    assert best.success and best.fun == min(1.0 + 1e-10 * np.sin(i) for i in range(1, len(calls) + 1))

    overshooting = _NoiseFloorWatch(lambda u, precise: (2.0 + u[0], np.ones(3)), precise=False)
    overshooting(np.full(3, -1.0))  # the iteration starts at 1.0; tries far above it are not noise
    for k in range(30):
        overshooting(np.full(3, float(k)))

    precise = _NoiseFloorWatch(rough, precise=True)  # float64 runs are left to L-BFGS's own tests
    precise.iteration_done(type("R", (), {"fun": 1.0})())
    for k in range(30):
        precise(np.full(3, float(k)))


def test_float32_solve_stops_within_its_rounding_of_the_float64_optimum():
    X, y, kwargs = _float32_problem(seed=1)
    fast = fit_head(X, y, **kwargs)
    exact = fit_head(X.astype(np.float64), y, **kwargs)
    assert fast.converged and abs(fast.loss - exact.loss) <= 2e-6 * exact.loss
