"""Re-solving the head: weighted, L2-regularised logistic regression on cached embeddings.

Every method reduces to one convex problem with different sample weights: class-balanced
(``neurontune``, ``llr``), group-balanced (``dfr``), or down-weighting what the original model
already gets right (``afr``). It is solved with L-BFGS (scipy) on standardised features, started
from the original head, and the standardisation is folded back so the result is a plain
``(W, b)`` for ``logits = embedding @ W.T + b``. Suppressed neurons get zero weight columns.

Held-out data often covers only some of a model's classes (a few ImageNet classes of 1000). The
data say nothing about the others, and cross-entropy would push their logits down without bound,
so the rows of classes without samples are kept at the original head's values: they still take
part in the softmax (the re-fitted rows are fitted against them) but are never changed, and come
back bit-identical.
"""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ntonnx.method.metrics import predict
from ntonnx.method.precondition import (
    GATE_ROWS_PER_COLUMN,
    GATE_SHRINKAGE,
    PRE_GATE_ROWS,
    PRE_GATE_SHRINKAGE,
    KroneckerMap,
    curvature_factors,
    kronecker_map,
    sample_rows,
)

logger = logging.getLogger("ntonnx")

#: Float32 embedding matrices up to this many entries, with at most 2 logits, are solved in float64
#: (a copy of at most 64 MB); with more logits the bound shrinks in proportion (the products cost more).
_SMALL = 1 << 23
#: Scores more than this below the top score of a row are raised to it before the exp.
_CLIP = -50.0
#: With more logits than ``_SERIAL_MAX_LOGITS`` the products are compute-bound: row blocks of at
#: least this many rows keep BLAS efficient and its threads in step (128-row blocks at 1000
#: classes ran 5x slower on two busy cores).
_WIDE_BLOCK_ROWS = 2048
#: Up to this many logits the solve runs BLAS on one thread (see ``fit_head``).
_SERIAL_MAX_LOGITS = 32
#: Row-block chunks of one evaluation, each on its own thread (up to the core count).
_CHUNKS = 4
#: Bytes of a row block on the memory-bound path: read once for both products of an evaluation.
#: At 50k x 2048 x 2 on 2 cores, 2 MB blocks in 4 chunks took 0.051 s per evaluation, 1 MB blocks
#: 0.100 s (the threads then contend for the GIL between small operations), one thread 0.089 s.
_BLOCK_BYTES = 2 << 20
#: L-BFGS stops when an iteration lowers the loss by less than this (relative): float64 products.
_FTOL = 1e-12
#: The same with float32 products, which resolve the loss to about 1e-9: the last iterations
#: before 1e-10 moved the loss by rounding noise only (about 35 full passes on 50k x 2048 x 2),
#: while 1e-8 stopped correlated problems 1e-6 short of the optimum (the loss is a weighted mean
#: cross-entropy, below 1, so scipy's test is absolute).
_FTOL_FLOAT32 = 1e-9


class ConvergenceWarning(UserWarning):
    """L-BFGS stopped before converging; raise ``max_iter`` or ``l2``."""


@dataclass
class HeadFit:
    """A re-solved head.

    Attributes
    ----------
    W : ndarray of shape (n_logits, dim); columns of suppressed neurons are zero.
    b : ndarray of shape (n_logits,)
    converged : whether L-BFGS met its tolerance.
    n_iter : L-BFGS iterations used.
    loss : final objective value.
    preconditioned : whether L-BFGS ran in the curvature coordinates (:mod:`ntonnx.method.precondition`).
    """

    W: np.ndarray
    b: np.ndarray
    converged: bool
    n_iter: int
    loss: float
    preconditioned: bool = False


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Weights of shape (n_samples,) giving every class present the same total weight (mean 1)."""
    return _balanced(labels)


def group_balanced_weights(groups: np.ndarray) -> np.ndarray:
    """Weights of shape (n_samples,) giving every group present the same total weight (mean 1)."""
    return _balanced(groups)


def pseudo_group_weights(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Weights balancing the pseudo-groups (class, original model right or wrong), mean 1.

    A label-free stand-in for DFR's group balancing: on biased data the original model's
    mistakes are where the minority groups concentrate. ``logits`` has shape (n_samples, n_logits).
    """
    right = predict(logits) == labels
    return _balanced(2 * np.asarray(labels, dtype=np.int64) + right)


def afr_weights(logits: np.ndarray, labels: np.ndarray, gamma: float) -> np.ndarray:
    """AFR's weights ``exp(-gamma * p_true)``, then balanced across classes (mean 1).

    ``p_true`` is the original model's probability of the true class, so samples it already gets
    confidently right count least. ``logits`` has shape (n_samples, n_logits).
    """
    exponent = -gamma * true_class_probability(logits, labels)
    weights = np.empty_like(exponent)
    classes = np.unique(labels)
    for y in classes:
        mask = labels == y
        # Shifted by the class's largest exponent (the normalisation cancels it): with a large
        # gamma, exp(-gamma * p) underflows to 0 for every sample and 0 / 0 would make NaN weights.
        raw = np.exp(exponent[mask] - exponent[mask].max())
        weights[mask] = raw / raw.sum() * len(labels) / len(classes)
    return weights


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the head's logits of shape (n_samples, n_logits); one logit gives [1 - sigmoid, sigmoid]."""
    return _softmax(_two_column(logits))


def true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax (or, for one logit, sigmoid) probability of each sample's true class."""
    probs = class_probabilities(logits)
    return probs[np.arange(len(labels)), labels]


def fit_head(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    n_logits: int,
    sample_weight: np.ndarray | None = None,
    suppressed: np.ndarray | None = None,
    l2: float = 1e-3,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    anchor_strength: float = 0.0,
    fit_intercept: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-7,
    precondition: bool | None = None,
) -> HeadFit:
    """Fit ``logits = embeddings @ W.T + b`` by weighted cross-entropy.

    Standardisation is folded into the weights instead of being applied to the data, and the
    data are read in row blocks that fit the CPU cache, once per objective evaluation, so a large
    embedding matrix is never copied. With few logits an evaluation is bound by memory bandwidth,
    so the blocks are shared among threads, one per core up to four (1.7x per evaluation on 2 cores;
    the result does not depend on the thread count). Loss, softmax and gradient sums are float64.
    Large float32 problems are multiplied in float32 (half the memory traffic of float64); a line
    search that float32 rounding noise no longer lets progress ends the run as converged (see
    :class:`_NoiseFloorWatch`), and any other failed line search is finished with float64 products.
    Small matrices are simply converted to float64.

    L-BFGS runs in the coordinates of a Kronecker-factored curvature estimate taken at the warm
    start (:mod:`ntonnx.method.precondition`) when the embeddings are correlated enough for it to pay
    and there are at least 4 rows per column (the gate); in ``benchmarks/solve.py`` that took
    1.4-3.2x fewer iterations on correlated synthetic (512-2048-d) and real 64-d CNN embeddings.
    The optimum is the same either way; with float32 products both paths stop within about 1e-6
    (relative) of the float64 optimum.

    Memory, and N beyond RAM: the embeddings are never copied when they are float32 (and not
    small) or float64, and C-contiguous; everything else the solve holds is independent of
    ``n_samples``: the curvature factors (three ``(dim + 1)²`` float64 matrices when preconditioned,
    100 MB at dim 2048), a ``(1024, dim)`` float64 row sample, one block of scores per thread (about 2 MB of
    rows, or 2048 rows times ``n_logits`` above 32 logits) and the L-BFGS history (20 vectors of
    ``n_logits * (dim + 1)`` float64: 330 MB at 1000 x 2048). So the limit on N is only that
    ``embeddings`` be one array: pass a ``numpy.memmap`` (e.g. ``np.load(path, mmap_mode="r")``)
    of a file larger than RAM, and every evaluation reads it block by block (four interleaved runs of blocks), at the
    disk's streaming speed (one full read per L-BFGS evaluation, plus 1024 random rows once);
    the page cache keeps what fits. Converted in memory to float64 instead: non-float
    embeddings, and float32 ones with ``n_samples * dim * max(n_logits, 2) <= 2^24`` (cheap products).

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, dim)
    labels : ndarray of shape (n_samples,), classes in ``[0, max(n_logits, 2))``.
    n_logits : number of head outputs; 1 means a single-logit binary head (sigmoid).
    sample_weight : ndarray of shape (n_samples,), or None for uniform.
    suppressed : neuron indices whose weight columns are fixed at zero.
    l2 : strength of ``l2/2 * ||W||^2`` on standardised features (scale-free).
    init : the original ``(W, b)``; the solve starts there (and ``anchor_strength`` pulls to it).
    anchor_strength : strength of ``a/2 * ||W - W_init||^2`` in standardised space (AFR's pull).
    fit_intercept : False keeps ``b`` at zero (heads without a bias input).
    max_iter : L-BFGS iteration limit.
    tol : L-BFGS tolerance on the largest gradient entry.

    With ``init``, the rows of classes that have no sample in ``labels`` are kept exactly as in
    ``init`` (see the module docstring); without it, every row is fitted.
    precondition : None lets the gate decide; True uses the curvature change of variables whenever
        it can be factored, False never (both reach the same optimum; for benchmarks and tests).
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    X = np.asarray(embeddings)
    if X.dtype != np.float32 or X.size * max(n_logits, 2) <= 2 * _SMALL:
        X = X.astype(np.float64, copy=False)
    X = np.ascontiguousarray(X)
    n, dim = X.shape
    labels = np.asarray(labels, dtype=np.int64)
    kept = np.setdiff1d(np.arange(dim), np.asarray(suppressed if suppressed is not None else [], dtype=np.int64))
    weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    weight = weight / weight.sum()
    wide = n_logits > _SERIAL_MAX_LOGITS
    row_bytes = dim * X.itemsize
    blocks = _row_blocks(n, row_bytes, max(1 << 20, _WIDE_BLOCK_ROWS * row_bytes) if wide else _BLOCK_BYTES)
    mu_all, sd_all = _weighted_moments(X, weight, blocks, centre=fit_intercept)
    mu, sd = mu_all[kept], sd_all[kept]
    sd[sd == 0] = 1.0
    n_kept = len(kept)

    # the unknowns: theta = [Wz | bz] of shape (n_logits, n_kept + fit_intercept), standardised space
    W_init = np.zeros((n_logits, n_kept)) if init is None else np.asarray(init[0], dtype=np.float64)[:, kept] * sd
    b_fixed = np.zeros(n_logits)
    if init is not None and fit_intercept:
        b_fixed = np.asarray(init[1], dtype=np.float64) + np.asarray(init[0], dtype=np.float64)[:, kept] @ mu
    free = fitted_rows(labels, n_logits) if init is not None else np.arange(n_logits)
    held = np.setdiff1d(np.arange(n_logits), free)
    held_lse = None
    if held.size:
        # The kept rows' logits never change: their log-sum-exp is computed once per sample, and
        # the solve works on the fitted rows alone (50 of 1000 classes cost 50 columns, not 1000).
        V_held = (W_init[held] / sd).T
        offset_held = b_fixed[held] - mu @ V_held
        held_lse = np.empty(n)
        for rows in blocks:
            held_lse[rows] = _logsumexp(X[rows][:, kept].astype(np.float64) @ V_held + offset_held)
        W_init, b_fixed = W_init[free], b_fixed[free]
    column = np.searchsorted(free, labels) if held.size else labels  # true class among the fitted rows
    n_fit = len(free)
    theta0 = np.hstack([W_init, b_fixed[:, None]]) if fit_intercept else W_init
    anchor = W_init.copy()

    def block_terms(
        chunk: list[slice], V: np.ndarray, offset: np.ndarray, dtype: type
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss and gradient sums over a run of row blocks (one thread's share of an evaluation)."""
        loss, grad_V, grad_b = 0.0, np.zeros((n_fit, dim)), np.zeros(n_fit)
        for rows in chunk:
            block = X[rows].astype(dtype, copy=False)
            scores = block @ V
            scores += offset.astype(dtype)
            scores = _two_column(scores)
            y, w = column[rows], weight[rows]
            picked = np.arange(len(y)), y
            top = scores.max(axis=1, keepdims=True)
            scores -= top
            true = scores[picked].astype(np.float64)
            # one exp per entry, in the products' precision; scores below -50 (probabilities that change
            # the loss by < 1e-21) are clipped so that no probability becomes a subnormal float, which
            # would slow the next product ~40x
            np.maximum(scores, _CLIP, out=scores)
            np.exp(scores, out=scores)
            log_norm = np.log(scores.sum(axis=1, dtype=np.float64))  # relative to top
            if held_lse is not None:  # the classes kept as they were still compete in the softmax
                top64 = top[:, 0].astype(np.float64)
                log_norm = np.logaddexp(top64 + log_norm, held_lse[rows]) - top64
            loss += w @ (log_norm - true)
            scores *= (w * np.exp(-log_norm)).astype(dtype)[:, None]  # residual: w * (softmax - onehot)
            scores[picked] -= w.astype(dtype)
            residual = scores[:, 1:] if n_logits == 1 else scores
            grad_V += residual.T @ block
            grad_b += residual.sum(axis=0, dtype=np.float64)
        return loss, grad_V, grad_b

    # Memory-bound (few logits): the blocks are dealt to _CHUNKS chunks that run on threads of their
    # own (NumPy and BLAS release the GIL), one pass over the data shared by the cores. The partition
    # is fixed, not one chunk per core, and summed in order: the result does not depend on how many
    # threads ran it. Wide heads are compute-bound and use BLAS's own threads on one chunk.
    chunks = [blocks[i::_CHUNKS] for i in range(_CHUNKS)] if not wide and len(blocks) >= 4 * _CHUNKS else [blocks]
    workers = min(len(chunks), _usable_cores())
    threads = ThreadPoolExecutor(workers, thread_name_prefix="ntonnx-solve") if workers > 1 else nullcontext()

    def objective(theta: np.ndarray, precise: bool) -> tuple[float, np.ndarray]:
        Wz = theta[:, :n_kept]
        bz = theta[:, n_kept] if fit_intercept else b_fixed
        # scores = ((X - mu) / sd) @ Wz.T + bz, computed as X @ V + offset without centring X
        dtype = np.float64 if precise else X.dtype
        V = np.zeros((dim, n_fit), dtype=dtype)
        V[kept] = (Wz / sd).T
        offset = bz - mu @ (Wz / sd).T
        run = map if pool is None else pool.map  # one core, or data too small to share: here, in turn
        parts = list(run(lambda chunk: block_terms(chunk, V, offset, dtype), chunks))
        loss = sum(part[0] for part in parts)
        grad_V = np.sum([part[1] for part in parts], axis=0)
        grad_b = np.sum([part[2] for part in parts], axis=0)
        # chain rule back to standardised weights: d/dWz = (grad_V - grad_b x mu) / sd
        grad_W = (grad_V[:, kept] - np.outer(grad_b, mu)) / sd + l2 * Wz + anchor_strength * (Wz - anchor)
        loss += 0.5 * l2 * np.sum(Wz**2) + 0.5 * anchor_strength * np.sum((Wz - anchor) ** 2)
        grad = np.hstack([grad_W, grad_b[:, None]]) if fit_intercept else grad_W
        return float(loss), grad

    # With few logits the block products are memory-bound: a second BLAS thread per product adds
    # nothing but synchronisation, which costs milliseconds per product when the other core is busy.
    with (
        threadpool_limits(limits=1, user_api="blas") if not wide else nullcontext(),
        threads as pool,
    ):
        change = None
        if precondition is not False:
            change = _curvature_map(X, weight, kept, mu, sd, theta0, l2 + anchor_strength,
                                    fit_intercept=fit_intercept, single_logit=n_logits == 1,
                                    gate=precondition is None)  # fmt: skip

        def flat_objective(u: np.ndarray, precise: bool) -> tuple[float, np.ndarray]:
            step = u.reshape(theta0.shape)
            theta = theta0 + (change.weights(step) if change is not None else step)
            loss, grad = objective(theta, precise)
            return loss, (change.gradient(grad) if change is not None else grad).ravel()

        def solve(u: np.ndarray, precise: bool, iterations: int):
            watch = _NoiseFloorWatch(flat_objective, precise)
            try:
                return minimize(
                    watch,
                    u,
                    jac=True,
                    method="L-BFGS-B",
                    callback=watch.iteration_done,
                    options={"maxiter": iterations, "gtol": tol, "ftol": _FTOL if precise else _FTOL_FLOAT32},
                )
            except _NoiseFloorReached:
                return watch.best_result()

        result = solve(np.zeros(theta0.size), X.dtype == np.float64, max_iter)
        n_iter = int(result.nit)
        if not result.success and X.dtype == np.float32 and n_iter < max_iter:
            # the line search failed on float32 rounding noise: finish with float64 products
            result = solve(result.x, True, max_iter - n_iter)
            n_iter += int(result.nit)
        step = result.x.reshape(theta0.shape)
        theta = theta0 + (change.weights(step) if change is not None else step)
    if not result.success:
        warnings.warn(
            f"head solve stopped after {n_iter} iterations without converging ({result.message}); "
            "raise --max-iter or --l2",
            ConvergenceWarning,
            stacklevel=2,
        )
    Wz = theta[:, :n_kept]
    bz = theta[:, n_kept] if fit_intercept else b_fixed
    W = np.zeros((n_logits, dim))
    W[np.ix_(free, kept)] = Wz / sd
    b = np.zeros(n_logits)
    b[free] = bz - W[np.ix_(free, kept)] @ mu
    if held.size:  # exactly as given, not as rounded through the standardisation
        W[held], b[held] = np.asarray(init[0], dtype=np.float64)[held], np.asarray(init[1], dtype=np.float64)[held]
    return HeadFit(
        W=W,
        b=b,
        converged=bool(result.success),
        n_iter=n_iter,
        loss=float(result.fun),
        preconditioned=change is not None,
    )


class _NoiseFloorReached(Exception):
    """Raised inside L-BFGS to end a line search that float32 products can no longer resolve."""


class _NoiseFloorWatch:
    """The objective as L-BFGS calls it, ending a float32 run whose line search is lost in rounding noise.

    Near the optimum a loss computed from float32 products is rough at about 1e-9 (relative): the
    line search then finds no step that lowers it, retries up to 20 times, restarts and retries
    again. On 50k x 2048 x 2 that was 40 of 59 full passes, none lowering the loss by more than
    3e-9. When one iteration has tried ``STALL_EVALUATIONS`` points whose loss lies within ``BAND``
    of where the iteration started (tries that overshoot far are the line search still finding its
    scale, and do not count), without lowering it by more than ``NOISE`` (both relative), the run
    ends at the best point seen, as converged to what float32 products resolve: 8e-7 (relative)
    above the float64 optimum on 50k x 2048 x 2 correlated features, where finishing in float64
    took 270 more iterations for that. Float64 runs are only watched.
    """

    STALL_EVALUATIONS = 4
    NOISE = 1e-8
    BAND = 1e-6

    def __init__(self, objective, precise: bool):
        self.objective, self.precise = objective, precise
        self.best = (np.inf, None, None)
        self.start_loss, self.flat_tries, self.nit, self.nfev = np.inf, 0, 0, 0

    def __call__(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = self.objective(u, self.precise)
        self.nfev += 1
        if loss < self.best[0]:
            self.best = (loss, u.copy(), grad)
        if self.start_loss == np.inf:
            self.start_loss = loss
        scale = abs(self.start_loss)
        self.flat_tries += abs(loss - self.start_loss) <= self.BAND * scale
        lost = self.start_loss - self.best[0] <= self.NOISE * scale
        if not self.precise and self.flat_tries >= self.STALL_EVALUATIONS and lost:
            raise _NoiseFloorReached
        return loss, grad

    def iteration_done(self, intermediate_result) -> None:
        self.nit += 1
        self.flat_tries = 0
        self.start_loss = float(intermediate_result.fun)

    def best_result(self):
        from scipy.optimize import OptimizeResult

        loss, u, grad = self.best
        return OptimizeResult(x=u, fun=loss, jac=grad, nit=self.nit, nfev=self.nfev, success=True,
                              message="converged to float32 rounding noise")  # fmt: skip


def _curvature_map(
    X: np.ndarray,
    weight: np.ndarray,
    kept: np.ndarray,
    mu: np.ndarray,
    sd: np.ndarray,
    theta0: np.ndarray,
    damping: float,
    *,
    fit_intercept: bool,
    single_logit: bool,
    gate: bool,
) -> KroneckerMap | None:
    """The Kronecker curvature change of variables at ``theta0`` from a seeded row subsample, or None.

    None when the warm start leaves no curvature, when the factors cannot be factored, or (with
    ``gate``) when there are few rows per column or the Gram estimate is mostly noise (see
    :mod:`ntonnx.method.precondition`).
    """
    if gate and len(X) < GATE_ROWS_PER_COLUMN * theta0.shape[1]:
        return None
    rows = sample_rows(len(X))

    def factors_of(rows: np.ndarray):
        z = (X[rows][:, kept].astype(np.float64) - mu) / sd
        if fit_intercept:
            z = np.hstack([z, np.ones((len(z), 1))])
        probs = class_probabilities(z @ theta0.T)
        return curvature_factors(z, probs, weight[rows], single_logit=single_logit)

    if gate and len(rows) > 2 * PRE_GATE_ROWS:
        first_look = factors_of(rows[:: len(rows) // PRE_GATE_ROWS][:PRE_GATE_ROWS])
        if first_look is None or first_look.shrinkage > PRE_GATE_SHRINKAGE:
            logger.debug("head solve: Ledoit-Wolf shrinkage %.4f on %d rows, not preconditioned",
                         np.nan if first_look is None else first_look.shrinkage, PRE_GATE_ROWS)  # fmt: skip
            return None
    factors = factors_of(rows)
    if factors is None:
        return None
    use = not gate or factors.shrinkage <= GATE_SHRINKAGE
    logger.debug("head solve: Ledoit-Wolf shrinkage %.4f, preconditioned: %s", factors.shrinkage, use)
    return kronecker_map(factors, damping) if use else None


def fitted_rows(labels: np.ndarray, n_logits: int) -> np.ndarray:
    """The head rows a re-fit changes: those of the classes with samples (every row of a one-logit head)."""
    if n_logits == 1:
        return np.arange(1)
    return np.intersect1d(np.arange(n_logits), np.asarray(labels))


def _usable_cores() -> int:
    """Cores this process may run on (its affinity mask, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _row_blocks(n: int, row_bytes: int, block_bytes: int = 1 << 20) -> list[slice]:
    """Row slices of about ``block_bytes`` each, so a block stays in cache between its two products."""
    rows = max(32, block_bytes // max(row_bytes, 1))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def _weighted_moments(
    X: np.ndarray, weight: np.ndarray, blocks: list[slice], *, centre: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and standard deviation of every column, block by block (no copy of ``X``).

    Without ``centre`` the mean is zero and the deviation is the root mean square. The variance
    uses a shift (the first row) so that columns with a large offset keep their precision.
    """
    dim = X.shape[1]
    shift = X[0].astype(np.float64) if centre else np.zeros(dim)
    first, second = np.zeros(dim), np.zeros(dim)
    for rows in blocks:
        block = X[rows] - shift.astype(X.dtype)
        w = weight[rows].astype(X.dtype)
        first += w @ block
        second += w @ (block * block)
    if not centre:
        return np.zeros(dim), np.sqrt(second)
    return shift + first, np.sqrt(np.maximum(second - first**2, 0.0))


def _balanced(keys: np.ndarray) -> np.ndarray:
    values, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return len(keys) / (len(values) * counts[inverse])


def _two_column(logits: np.ndarray) -> np.ndarray:
    """One-logit heads as two columns ``[0, s]``, so softmax over them is the sigmoid."""
    if logits.shape[1] == 1:
        return np.hstack([np.zeros_like(logits), logits])
    return logits


def _logsumexp(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=1)
    return top + np.log(np.exp(scores - top[:, None]).sum(axis=1))


def _softmax(scores: np.ndarray) -> np.ndarray:
    return np.exp(scores - _logsumexp(scores)[:, None])
