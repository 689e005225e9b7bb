"""Deep Feature Reweighting's last-layer re-fit (Kirichenko et al. 2023), the real recipe.

Given held-out embeddings with a group for every sample (true group labels for the ``dfr``
reference, inferred pseudo-groups for the label-free method), DFR:

1. standardises the embeddings with the mean and standard deviation of the whole held-out set;
2. chooses the inverse L1 strength ``C`` from a grid: the held-out set is split in two halves,
   every group of one half is *subsampled* down to the size of its smallest group, an L1-penalised
   logistic regression is fitted on that balanced subsample for every ``C``, and ``C`` is scored by
   the worst-group accuracy on the other half (here both halves take both roles and the scores are
   averaged, which halves the variance of the choice; the published code scores one half);
3. fits the chosen ``C`` on ``n_draws`` independent group-balanced subsamples of the whole set
   and averages their coefficients;
4. folds the standardisation back, so the result is a plain ``(W, b)`` for the raw embeddings.

Subsampling, not re-weighting, is the point: the majority groups contribute as many samples as
the smallest group, so the head cannot buy its loss back on them, and averaging the draws
recovers most of the discarded data's variance reduction. The L1 penalty keeps few neurons.

The L1 problem ``C * sum_i loss_i + ||W||_1`` (scikit-learn's convention, intercept unpenalised)
is solved exactly with L-BFGS-B on the split ``W = P - N`` with ``P, N >= 0``. Two classes use one
weight vector (a sigmoid), as scikit-learn does; more classes use the multinomial (softmax) loss.

As a ``--method`` (an upper reference: it reads group labels), ``dfr`` fits on every labelled
sample the pipeline passes (identification and tuning parts together): its halves are its own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ntonnx.method.base import FitInputs, Method, Refit
from ntonnx.method.metrics import accuracy_by, predict
from ntonnx.method.solve import ConvergenceWarning, class_balanced_weights, fitted_rows

#: DFR's published grid of inverse L1 strengths.
C_GRID: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
#: Independent group-balanced subsamples averaged in the final fit.
N_DRAWS = 10
#: L-BFGS-B stops when an iteration lowers the objective by less than this (relative).
_FTOL = 1e-10


@dataclass
class DFRFit:
    """A DFR re-fit and what chose it.

    Attributes
    ----------
    W : ndarray of shape (n_logits, dim), for ``logits = embeddings @ W.T + b``.
    b : ndarray of shape (n_logits,)
    C : the chosen inverse L1 strength.
    validation : C -> worst-group (or mean per-group) accuracy on the held-back halves, mean of the two.
    holdout_predictions : ndarray of shape (n_samples,): each sample's class predicted by the
        chosen-``C`` fit on the *other* half (cross-fitted, so an honest estimate of the re-fit).
    """

    W: np.ndarray
    b: np.ndarray
    C: float
    validation: dict[float, float] = field(default_factory=dict)
    holdout_predictions: np.ndarray | None = None


def l1_logistic(
    Z: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    C: float,
    sample_weight: np.ndarray | None = None,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    fit_intercept: bool = True,
    max_iter: int = 5000,
    tol: float = 1e-6,
    held_lse: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``C * sum_i s_i * loss_i + ||coef||_1`` over ``coef`` and an unpenalised intercept.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, dim), already standardised.
    labels : ndarray of shape (n_samples,), classes in ``[0, n_classes)``.
    n_classes : 2 gives one weight vector (sigmoid loss); more give a softmax over ``n_classes``.
    C : inverse penalty strength (scikit-learn's ``C``).
    sample_weight : ndarray of shape (n_samples,) or None (ones).
    init : ``(coef, intercept)`` to start from (warm start), shapes as returned.
    fit_intercept : False keeps the intercept at zero.
    max_iter, tol : L-BFGS-B limits (``tol`` on the largest projected gradient entry).
    held_lse : ndarray of shape (n_samples,), or None: the log-sum-exp of the logits of classes
        that are not fitted but still compete in the softmax (the rows of a head's classes without
        samples, kept as they are). Given, the loss is a softmax over ``n_classes`` fitted columns
        plus that fixed term, even for ``n_classes == 2``.

    Returns
    -------
    coef : ndarray of shape (k, dim), k = 1 for two classes, else ``n_classes``.
    intercept : ndarray of shape (k,)
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    Z = np.asarray(Z, dtype=np.float64)
    n, dim = Z.shape
    labels = np.asarray(labels, dtype=np.int64)
    k = 1 if n_classes == 2 and held_lse is None else n_classes
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    size = k * dim
    if k == 1:
        sign = np.where(labels == 1, 1.0, -1.0)
    else:
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef = (theta[:size] - theta[size : 2 * size]).reshape(k, dim)
        intercept = theta[2 * size :]
        scores = Z @ coef.T + intercept
        if k == 1:
            margin = sign * scores[:, 0]
            loss = s @ np.logaddexp(0.0, -margin)
            # d loss / d score = -sign * sigmoid(-margin)
            residual = (-sign * s * np.exp(-np.logaddexp(0.0, margin)))[:, None]
        else:
            top = scores.max(axis=1, keepdims=True)
            log_norm = top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))
            if held_lse is not None:
                log_norm = np.logaddexp(log_norm, held_lse)
            loss = s @ (log_norm - scores[np.arange(n), labels])
            residual = (np.exp(scores - log_norm[:, None]) - onehot) * s[:, None]
        grad_coef = C * (residual.T @ Z).ravel()
        value = C * loss + theta[: 2 * size].sum()
        grad = np.concatenate([grad_coef + 1.0, 1.0 - grad_coef, C * residual.sum(axis=0)])
        return float(value), grad

    if init is None:
        coef0, intercept0 = np.zeros((k, dim)), np.zeros(k)
    else:
        coef0, intercept0 = (np.asarray(a, dtype=np.float64) for a in init)
    theta0 = np.concatenate([np.maximum(coef0, 0).ravel(), np.maximum(-coef0, 0).ravel(), intercept0.ravel()])
    if not fit_intercept:
        intercept0 = np.zeros(k)
    bounds = [(0.0, None)] * (2 * size) + [(None, None) if fit_intercept else (0.0, 0.0)] * k
    # small dense products: a second BLAS thread only adds synchronisation
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            objective,
            theta0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": max_iter, "gtol": tol, "ftol": _FTOL},
        )
    if not result.success and result.nit >= max_iter:
        warnings.warn(f"L1 logistic regression stopped after {result.nit} iterations", ConvergenceWarning, stacklevel=2)
    theta = result.x
    return (theta[:size] - theta[size : 2 * size]).reshape(k, dim), theta[2 * size :].copy()


def balanced_subsample(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices with every group present cut (uniformly at random) to the smallest group's size."""
    values, counts = np.unique(groups, return_counts=True)
    smallest = counts.min()
    picked = [rng.choice(np.flatnonzero(groups == g), smallest, replace=False) for g in values]
    return np.sort(np.concatenate(picked))


def fit_dfr(
    embeddings: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    n_logits: int,
    C_grid: tuple[float, ...] = C_GRID,
    n_draws: int = N_DRAWS,
    seed: int = 0,
    criterion: str = "worst",
    fit_intercept: bool = True,
    original: tuple[np.ndarray, np.ndarray] | None = None,
) -> DFRFit:
    """DFR's re-fit on held-out data with one group per sample (see the module docstring).

    Groups must nest in classes (every group holds one class), as ``(class, attribute)`` groups
    and ``(class, pseudo-minority)`` pseudo-groups do; a class may hold a single group.

    With ``original`` and a head of more than two outputs, the rows of classes without samples
    are kept exactly as in ``original``: they compete in every softmax of the fit (their
    log-sum-exp is a fixed term of the loss, as in :func:`ntonnx.method.solve.fit_head`) but are
    never changed. Without it, every row is fitted, and a class without samples is pushed down
    until it is never predicted.

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, dim)
    labels : ndarray of shape (n_samples,)
    groups : ndarray of shape (n_samples,), integer group ids.
    n_logits : outputs of the head; 1 is a single-logit binary head.
    C_grid : inverse L1 strengths to choose from.
    n_draws : group-balanced subsamples averaged in the final fit.
    seed : seed of the halves and the subsamples.
    criterion : ``"worst"`` scores ``C`` by the worst-group accuracy (DFR's); ``"mean"`` by the
        mean of the per-group accuracies, which is steadier when the smallest groups are tiny or
        hold mislabelled samples (as inferred pseudo-minorities do).
    fit_intercept : False for a head without a bias: no intercept, and the embeddings are only
        scaled (by their root mean square), not centred, so the folded bias stays zero.
    original : the original head ``(W, b)``, whose rows of classes without samples are kept.
    """
    if criterion not in ("worst", "mean"):
        raise ValueError(f"criterion must be 'worst' or 'mean', got {criterion!r}")
    X = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    n_classes = max(n_logits, 2)
    mu = X.mean(axis=0) if fit_intercept else np.zeros(X.shape[1])
    sd = X.std(axis=0) if fit_intercept else np.sqrt((X**2).mean(axis=0))
    sd[sd == 0] = 1.0
    Z = (X - mu) / sd
    rng = np.random.default_rng(seed)
    fitted = np.arange(n_classes)
    held_logits = held_lse = None
    if original is not None and n_logits > 2:
        fitted = fitted_rows(labels, n_logits)
        held = np.setdiff1d(np.arange(n_logits), fitted)
        if held.size:
            from scipy.special import logsumexp

            W0, b0 = (np.asarray(a, dtype=np.float64) for a in original)
            held_logits = X @ W0[held].T + b0[held]
            held_lse = logsumexp(held_logits, axis=1)
            labels = np.searchsorted(fitted, labels)  # classes as columns of the fitted rows
    n_fitted = len(fitted)

    def predicted(rows: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        """Classes (as fitted columns; a held class counts as ``n_fitted``) predicted on ``rows``."""
        scores = Z[rows] @ coef.T + intercept
        if held_logits is None:
            return predict(scores)
        top_held = held_logits[rows].max(axis=1)
        choice = scores.argmax(axis=1)
        return np.where(scores.max(axis=1) >= top_held, choice, n_fitted)

    def held_part(rows: np.ndarray) -> np.ndarray | None:
        return None if held_lse is None else held_lse[rows]

    halves = _stratified_halves(groups, rng)
    grid = sorted(C_grid)  # small C first: sparse solutions warm-start the denser ones
    scores = {c: [] for c in grid}
    holdout = {c: np.empty(len(labels), dtype=np.int64) for c in grid}
    for fit_part, score_part in (halves, halves[::-1]):
        train = fit_part[balanced_subsample(groups[fit_part], rng)]
        weight = class_balanced_weights(labels[train])
        start = None
        for c in grid:
            start = l1_logistic(
                Z[train],
                labels[train],
                n_classes=n_fitted,
                C=c,
                sample_weight=weight,
                init=start,
                fit_intercept=fit_intercept,
                held_lse=held_part(train),
            )
            predictions = predicted(score_part, *start)
            holdout[c][score_part] = predictions
            scores[c].append(_group_score(predictions, labels[score_part], groups[score_part], criterion))
    validation = {c: float(np.mean(v)) for c, v in scores.items()}
    # ties go to the stronger penalty (fewer neurons), i.e. the smaller C
    best = max(grid, key=lambda c: (validation[c], -c))

    coefs, intercepts, start = [], [], None
    for _ in range(n_draws):
        train = balanced_subsample(groups, rng)
        start = l1_logistic(
            Z[train],
            labels[train],
            n_classes=n_fitted,
            C=best,
            sample_weight=class_balanced_weights(labels[train]),
            init=start,
            fit_intercept=fit_intercept,
            held_lse=held_part(train),
        )
        coefs.append(start[0])
        intercepts.append(start[1])
    coef, intercept = np.mean(coefs, axis=0), np.mean(intercepts, axis=0)
    if held_lse is None:
        W, b = fold_head(coef, intercept, mu, sd, n_logits)
        return DFRFit(W=W, b=b, C=best, validation=validation, holdout_predictions=holdout[best])
    W, b = (np.array(a, dtype=np.float64) for a in original)
    W[fitted], b[fitted] = fold_head(coef, intercept, mu, sd, n_fitted)
    # cross-fitted predictions as class ids; a held class predicted (column n_fitted) is -1, never a label
    holdout_classes = np.append(fitted, -1)[holdout[best]]
    return DFRFit(W=W, b=b, C=best, validation=validation, holdout_predictions=holdout_classes)


def fold_head(
    coef: np.ndarray, intercept: np.ndarray, mu: np.ndarray, sd: np.ndarray, n_logits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a model on standardised embeddings into ``(W, b)`` for the raw ones, in the head's shape.

    A one-vector (binary) model becomes ``W`` of shape (1, dim) for a single-logit head, or the
    antisymmetric pair ``[-w/2, w/2]`` for a two-logit head (same softmax, same predictions).

    Parameters
    ----------
    coef : ndarray of shape (k, dim); intercept : ndarray of shape (k,)
    mu, sd : ndarray of shape (dim,), the standardisation ``Z = (X - mu) / sd``.
    n_logits : outputs of the head.
    """
    W = coef / sd
    b = intercept - W @ mu
    if W.shape[0] == 1 and n_logits == 2:
        W, b = np.vstack([-W / 2, W / 2]), np.concatenate([-b / 2, b / 2])
    return W, b


def _group_score(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray, criterion: str) -> float:
    accuracies = list(accuracy_by(predictions, labels, groups).values())
    return float(min(accuracies) if criterion == "worst" else np.mean(accuracies))


def _stratified_halves(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets, each holding half of every group (a group of one goes to the first)."""
    first, second = [], []
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        cut = (len(members) + 1) // 2
        first.append(members[:cut])
        second.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


class Dfr(Method):
    name = "dfr"
    summary = (
        "DFR's recipe: L1 re-fit on group-balanced subsamples, C chosen by worst-group accuracy (needs group labels)"
    )
    needs_groups = True
    uses_all_heldout = True

    def fit(self, inputs: FitInputs) -> Refit:
        data = inputs.tuning
        fit = fit_dfr(
            data.embeddings,
            data.labels,
            data.groups,
            n_logits=inputs.original[0].shape[0],
            seed=inputs.options.seed,
            fit_intercept=inputs.fit_intercept,
            original=inputs.original,
        )
        return Refit(
            W=fit.W,
            b=fit.b,
            converged=None,
            selected=f"C={fit.C:g}",
            details={"C": fit.C, "validation": {f"{c:g}": v for c, v in fit.validation.items()}},
        )


METHOD = Dfr()
