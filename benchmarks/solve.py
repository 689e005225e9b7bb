"""Head-solve benchmark: ``fit_head`` against its own variants and scikit-learn, on identical inputs.

Every row solves the same problem: class-balanced, L2-regularised (``l2`` on standardised
features) multinomial logistic regression, started from an "original head", exactly what
``ntonnx tune`` asks of :func:`ntonnx.method.solve.fit_head`. Each solution is scored by one float64
evaluator of that objective, and its relative gap to a reference is reported: the reference is
``fit_head`` with float64 products (L-BFGS ftol 1e-12), started from the best solution any
method found, so it is at least as good as every row.

Data kinds:

- ``iid``: ReLU of iid Gaussians, labels from a noisy teacher (what ``benchmarks/speed.py`` uses);
  the original head is the teacher, perturbed.
- ``correlated``: ReLU-sparse embeddings of a low-rank latent (power-law spectrum, class-dependent
  means) plus noise, like pooled CNN features; the original head is the class centroids.
- ``separable``: ``iid`` with noiseless, large-margin labels.
- ``real:<case>/<split>``: embeddings extracted from a benchmark model (``/work/cache/acts/<case>/``,
  used when its ``READY`` file exists), with that model's own head.

Methods: ``fit_head`` (the gate chooses), ``fit_head plain`` / ``fit_head kronecker`` (each path
forced), ``fit_head before`` (plain path with the float32 ftol of 1e-10 that ``fit_head`` used
before), and scikit-learn's ``LogisticRegression`` with ``lbfgs`` (multinomial, tol 1e-8), ``newton-cholesky``
and ``liblinear`` (which also penalises the intercept and, for more than two classes, solves
one-vs-rest: its objective is a different problem, shown for reference) on the same standardised
float64 features, from zero (they take no warm start). A two-logit softmax head with ridge ``l2`` on
both rows is a one-logit logistic regression with ridge ``l2/2``; the peers solve that form, and
their ``β`` is scored as ``W = [-β/2, β/2]``.

Run from the repository root::

    python benchmarks/solve.py            # writes benchmarks/results/solve.md
    python benchmarks/solve.py --quick    # small problems, not written
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntonnx.method import solve as solve_module  # noqa: E402
from ntonnx.method.solve import _row_blocks, _weighted_moments, class_balanced_weights, fit_head  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ACTS = Path("/work/cache/acts")
L2 = 1e-3


@dataclass
class Problem:
    """One head solve. ``X`` float32 (n, d); ``init`` the original head ``(W (C, d), b (C,))``."""

    kind: str
    X: np.ndarray
    labels: np.ndarray
    n_logits: int
    init: tuple[np.ndarray, np.ndarray]

    @property
    def weights(self) -> np.ndarray:
        return class_balanced_weights(self.labels)


def iid_problem(n: int, d: int, c: int, seed: int, *, separable: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    scale = 30.0 if separable else 3.0
    teacher = rng.standard_normal((c, d)).astype(np.float32) * (scale / np.sqrt(d))
    for start in range(0, n, 10000):
        rows = slice(start, min(start + 10000, n))
        X[rows] = np.maximum(rng.standard_normal((rows.stop - start, d), dtype=np.float32), 0)
        logits = X[rows] @ teacher.T
        labels[rows] = (logits if separable else logits + rng.gumbel(size=logits.shape)).argmax(1)
    W0 = teacher + rng.standard_normal(teacher.shape).astype(np.float32) * (0.3 * scale / 3 / np.sqrt(d))
    return Problem("separable" if separable else "iid", X, labels, c, (W0, np.zeros(c, dtype=np.float32)))


def correlated_problem(n: int, d: int, c: int, seed: int) -> Problem:
    """ReLU(latent @ loadings + noise - 0.5): a rank-``r`` latent with a power-law spectrum and class means.

    The original head is what ERM on a separate training draw of the same distribution gives in
    closed form: linear discriminant analysis (shrunk pooled covariance), with the temperature
    that minimises the training cross-entropy.
    """
    rng = np.random.default_rng(seed)
    r = min(d // 2, 256)
    spectrum = (1.0 + np.arange(r)) ** -0.7
    loadings = (rng.standard_normal((r, d)) * spectrum[:, None] * 1.5).astype(np.float32)
    # class means ~2.5 latent standard deviations apart (more with many classes): the original head's
    # held-out accuracy is ~80% at 2 classes and ~60% at 1000
    means = rng.standard_normal((c, r)).astype(np.float32) * ((2.5 + 2.5 * np.log10(c / 2)) / np.sqrt(2 * r))

    def draw(size: int, draw_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = draw_rng.integers(0, c, size=size)
        X = np.empty((size, d), dtype=np.float32)
        for start in range(0, size, 10000):
            rows = slice(start, min(start + 10000, size))
            latent = means[labels[rows]] + draw_rng.standard_normal((rows.stop - start, r), dtype=np.float32)
            noise = draw_rng.standard_normal((rows.stop - start, d), dtype=np.float32) * 0.5
            X[rows] = np.maximum(latent @ loadings + noise - 0.5, 0)
        return X, labels

    X_train, y_train = draw(min(n, 50_000), np.random.default_rng(seed + 1))
    counts = np.maximum(np.bincount(y_train, minlength=c), 1)
    centroids = np.zeros((c, d), dtype=np.float32)
    np.add.at(centroids, y_train, X_train)
    centroids /= counts[:, None]
    X_train -= centroids[y_train]  # within-class scatter
    scatter = (X_train.T @ X_train).astype(np.float64) / len(X_train)
    scatter[np.diag_indices(d)] += 0.1 * np.trace(scatter) / d
    W0 = np.linalg.solve(scatter, centroids.T.astype(np.float64)).T
    b0 = -0.5 * np.einsum("kd,kd->k", W0, centroids) + np.log(counts / counts.sum())
    del X_train
    X_val, y_val = draw(5000, np.random.default_rng(seed + 3))
    losses = {}
    for temperature in 2.0 ** np.arange(-6, 2):
        scores = temperature * (X_val @ W0.T + b0)
        scores -= scores.max(axis=1, keepdims=True)
        losses[temperature] = np.mean(np.log(np.exp(scores).sum(axis=1)) - scores[np.arange(5000), y_val])
    best = min(losses, key=losses.get)
    X, labels = draw(n, np.random.default_rng(seed + 2))
    init = ((best * W0).astype(np.float32), (best * b0).astype(np.float32))
    return Problem("correlated", X, labels, c, init)


def real_problems() -> list[Problem]:
    """The biased held-out split of every case whose extraction finished (``READY``), with its head."""
    problems = []
    for ready in sorted(ACTS.glob("*/READY")) if ACTS.exists() else []:
        case = ready.parent
        with np.load(case / "head.npz") as head:
            init = (head["W"].astype(np.float32), head["b"].astype(np.float32))
        for split in [case / "heldout_biased.npz"]:
            with np.load(split) as data:
                X = np.ascontiguousarray(data["embeddings"], dtype=np.float32)
                labels = data["labels"].astype(np.int64)
            problems.append(Problem(f"real:{case.name}/{split.stem}", X, labels, len(init[0]), init))
    return problems


def objective(problem: Problem, W: np.ndarray, b: np.ndarray) -> float:
    """``fit_head``'s objective (weighted mean cross-entropy + l2/2 ||W sd||²) in float64, blocked."""
    X, labels, weight = problem.X, problem.labels, problem.weights
    weight = weight / weight.sum()
    _, sd = _weighted_moments(X, weight, _row_blocks(len(X), X.shape[1] * X.itemsize), centre=True)
    sd[sd == 0] = 1.0
    loss = 0.0
    for rows in _row_blocks(len(X), X.shape[1] * 8, 1 << 22):
        scores = X[rows].astype(np.float64) @ W.T + b
        if scores.shape[1] == 1:
            scores = np.hstack([np.zeros_like(scores), scores])
        top = scores.max(axis=1)
        log_norm = top + np.log(np.exp(scores - top[:, None]).sum(axis=1))
        loss += weight[rows] @ (log_norm - scores[np.arange(len(scores)), labels[rows]])
    return float(loss + 0.5 * L2 * np.sum((W * sd) ** 2))


def run_fit_head(problem: Problem, variant: str, max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray, int, bool]:
    kwargs = dict(n_logits=problem.n_logits, sample_weight=problem.weights, init=problem.init, l2=L2, max_iter=max_iter)
    saved = solve_module._FTOL_FLOAT32
    if variant == "before":
        solve_module._FTOL_FLOAT32 = 1e-10
    try:
        precondition = {"auto": None, "plain": False, "kronecker": True, "before": False}[variant]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_head(problem.X, problem.labels, precondition=precondition, **kwargs)
    finally:
        solve_module._FTOL_FLOAT32 = saved
    return fit.W, fit.b, fit.n_iter, fit.converged


def run_sklearn(problem: Problem, solver: str, Z: np.ndarray, mu: np.ndarray, sd: np.ndarray):
    """scikit-learn on the standardised features ``Z``; its solution mapped back to ``(W, b)``."""
    from sklearn.linear_model import LogisticRegression

    n = len(problem.labels)
    weights = problem.weights / problem.weights.sum() * n
    # ours: sum(w_i CE_i) / sum(w) + l2/2 ||Wz||²; sklearn: C * sum(w_i CE_i) + 1/2 ||β||². Two logits with
    # a ridge on both rows are one logit β = w1 - w0 with ridge l2/2, so C doubles there.
    C = (2.0 if problem.n_logits == 2 else 1.0) / (L2 * n)
    model = LogisticRegression(C=C, solver=solver, tol=1e-8, max_iter=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(Z, problem.labels, sample_weight=weights)
    W, b = model.coef_ / sd, model.intercept_ - (model.coef_ / sd) @ mu
    if problem.n_logits == 2:
        W, b = np.vstack([-W / 2, W / 2]), np.concatenate([-b / 2, b / 2])
    return W, b, int(np.max(model.n_iter_))


def reference(problem: Problem, best: tuple[np.ndarray, np.ndarray]) -> float:
    """float64 products from the best solution found, L-BFGS to ftol 1e-12: the exact objective."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_head(problem.X.astype(np.float64), problem.labels, n_logits=problem.n_logits,
                       sample_weight=problem.weights, init=best, l2=L2, tol=1e-10, precondition=True)  # fmt: skip
    return min(objective(problem, fit.W, fit.b), objective(problem, *best))


VARIANTS = {"fit_head": "auto", "fit_head plain": "plain", "fit_head kronecker": "kronecker",
            "fit_head before": "before"}  # fmt: skip


def bench(problem: Problem, methods: dict[str, int], peer_runs: int, log, max_iter: int = 1000) -> list[dict]:
    """Run each method ``methods[name]`` times (and each scikit-learn peer ``peer_runs`` times)."""
    rows, solutions = [], []
    n, d = problem.X.shape
    for name, repeats in methods.items():
        seconds = []
        for _ in range(repeats):
            gc.collect()
            start = time.perf_counter()
            W, b, n_iter, converged = run_fit_head(problem, VARIANTS[name], max_iter)
            seconds.append(time.perf_counter() - start)
        rows.append({"method": name, "seconds": seconds, "n_iter": f"{n_iter}" + ("" if converged else " (limit)"),
                     "loss": objective(problem, W, b)})  # fmt: skip
        solutions.append((W, b))
        log(f"  {problem.kind} {n}x{d}x{problem.n_logits} {name}: {statistics.median(seconds):.2f} s, "
            f"{n_iter} it, loss {rows[-1]['loss']:.10g}")  # fmt: skip
    if peer_runs:
        weight = problem.weights / problem.weights.sum()
        mu, sd = _weighted_moments(problem.X, weight, _row_blocks(n, d * 4), centre=True)
        sd[sd == 0] = 1.0
        Z = (problem.X - mu) / sd
        solvers = ["lbfgs", "newton-cholesky"] + (["liblinear"] if problem.n_logits <= 2 else [])
        for solver in solvers:
            seconds = []
            for _ in range(peer_runs):
                gc.collect()
                start = time.perf_counter()
                W, b, n_iter = run_sklearn(problem, solver, Z, mu, sd)
                seconds.append(time.perf_counter() - start)
            rows.append({"method": f"sklearn {solver}", "seconds": seconds, "n_iter": n_iter,
                         "loss": objective(problem, W, b)})  # fmt: skip
            if solver != "liblinear":
                solutions.append((W, b))
            log(f"  {problem.kind} {n}x{d}x{problem.n_logits} sklearn {solver}: "
                f"{statistics.median(seconds):.2f} s, loss {rows[-1]['loss']:.10g}")  # fmt: skip
        del Z
    best = min(solutions, key=lambda s: objective(problem, *s))
    # no reference when every run stopped at its iteration limit (the per-iteration rows at 1000 classes)
    ref = reference(problem, best) if not all(row["n_iter"].endswith("(limit)") for row in rows) else None
    for row in rows:
        gap = None if ref is None else (row["loss"] - ref) / abs(ref)
        row.update(kind=problem.kind, n=n, d=d, c=problem.n_logits, gap=gap)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| N | d | C | data | method | runs | seconds (median) | min–max | ratio to `fit_head before` "
        "| iterations | final objective | relative gap to reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = [r for r in rows if (r["kind"], r["n"], r["d"], r["c"]) == (row["kind"], row["n"], row["d"], row["c"])]
        before = next((r for r in same if r["method"] == "fit_head before"), None)
        med = statistics.median(row["seconds"])
        ratio = f"{med / statistics.median(before['seconds']):.2f}" if before else "–"
        lines.append(
            f"| {row['n']} | {row['d']} | {row['c']} | {row['kind']} | {row['method']} | {len(row['seconds'])} "
            f"| {med:.3f} "
            f"| {min(row['seconds']):.3f}–{max(row['seconds']):.3f} | {ratio} | {row['n_iter']} "
            f"| {row['loss']:.10f} | {'–' if row['gap'] is None else format(row['gap'], '.1e')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k x 512 problems, 1 repeat; not written")
    parser.add_argument("--only", help="run only problems whose label contains this (e.g. 'x1000', 'real')")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    r = 1 if args.quick else args.repeats
    all_four = dict.fromkeys(VARIANTS, r)
    two = {"fit_head": r, "fit_head before": r}
    forced_once = {**two, "fit_head plain": 1, "fit_head kronecker": 1}
    once = {"fit_head": 1, "fit_head before": 1}
    # (n, d, C, kind, {method: runs}, scikit-learn runs, L-BFGS iteration limit)
    if args.quick:
        plan = [(10_000, 512, 2, "iid", all_four, 1, 1000), (10_000, 512, 2, "correlated", all_four, 1, 1000)]
    else:
        plan = [
            (50_000, 2048, 2, "iid", all_four, 0, 1000),
            (50_000, 2048, 2, "correlated", forced_once, 0, 1000),
            (50_000, 2048, 2, "separable", two, 0, 1000),
            (10_000, 512, 2, "iid", two, r, 1000),
            (10_000, 512, 2, "correlated", two, r, 1000),
            (10_000, 2048, 2, "correlated", two, 0, 1000),
            (200_000, 2048, 2, "correlated", once, 0, 1000),
            (50_000, 512, 10, "correlated", once, 0, 1000),
            (10_000, 512, 1000, "correlated", {"fit_head": 1}, 0, 150),
            (50_000, 2048, 1000, "correlated", once, 0, 3),
        ]
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    rows = []
    makers = {"iid": iid_problem, "correlated": correlated_problem,
              "separable": lambda n, d, c, s: iid_problem(n, d, c, s, separable=True)}  # fmt: skip
    for n, d, c, kind, methods, peer_runs, max_iter in plan:
        label = f"{kind} {n}x{d}x{c}"
        if args.only and args.only not in label:
            continue
        problem = makers[kind](n, d, c, 0)
        rows += bench(problem, methods, peer_runs, log, max_iter)
        del problem
    if not args.quick and (not args.only or "real" in args.only):
        for problem in real_problems():  # multinomial scikit-learn took 40-60 s per run here: binary only
            rows += bench(problem, all_four, 1 if problem.n_logits <= 2 else 0, log)
    report = "\n".join(
        [
            "## Head solve (`fit_head`) vs scikit-learn",
            "",
            f"Class-balanced weights, l2 = {L2} on standardised features, medians of the runs in one "
            "process, BLAS threads as `fit_head` sets them (one for C ≤ 32). Relative gap = (objective − "
            "reference) / reference, the reference being float64 L-BFGS to ftol 1e-12 from the best solution "
            "found (a gap within ±1e-8 is float rounding).",
            "",
            table(rows),
            "",
            f"_Measured by `python benchmarks/solve.py` in {time.perf_counter() - start:.0f} s on "
            f"{os.cpu_count()} CPU cores (shared with other work: 1-minute load average {load_before:.2f} at the "
            f"start, {os.getloadavg()[0]:.2f} at the end)._",
        ]
    )
    print(report)
    if not (args.quick or args.no_write or args.only):
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "solve.md").write_text(report + "\n")
        log(f"written to {RESULTS / 'solve.md'}")


if __name__ == "__main__":
    main()
