"""``pgdfr``: DFR on pseudo-groups, with a gate and a guard. Label-free: group labels are never read.

Why
---
On held-out data as biased as the training data, a class-balanced re-fit (``llr``, and
NeuronTune, which rarely suppresses anything on binary tasks) keeps the shortcut: the majority
groups still dominate every class. DFR removes it by balancing every (class, attribute) group,
which needs group labels. ``pgdfr`` balances groups inferred by a deliberately weak bias model
(:mod:`ntonnx.method.pseudo_groups`): ``(class, pseudo-attribute)``, the pseudo-minority being
what the bias model gets wrong out of fold.

The re-fit takes one of two forms, chosen by the shape of the data (``refit="auto"``):

weighted (more samples than embedding dimensions)
    One L2 logistic regression on *every* held-out sample, started from the original head, with
    sample weights that give every pseudo-group the same total weight; its ridge is chosen from
    ``WEIGHTED_L2_GRID`` as DFR chooses ``C``: by the worst *pseudo*-group accuracy on held-back
    halves. Inferred minorities are small (8-40 samples per class) and multi-class tasks have many
    cells, so subsampling to the smallest cell keeps a handful of samples per group; weighting keeps
    them all (colored_fashion: 26.9 vs 6.1, text: 67.3 vs 61.1 test worst-group accuracy).
subsample (no more samples than embedding dimensions + 1)
    DFR's own recipe on the pseudo-groups (:mod:`ntonnx.method.dfr`: subsample every group to the
    smallest, L1, ``C`` on pseudo-groups). With ``n <= dim + 1`` any labelling of the samples is
    linearly separable (Cover), and on separable data sample weights lose their grip: the fit
    approaches the same maximum-margin direction whatever the weights, and only a ridge strong
    enough to blur every direction moves it. Subsampling changes the data instead (1280-d embeddings
    of 1000-1200 samples: 64.4 / 41.9 / 59.5 vs 52.0 / 33.2 / 45.5 for the weighted form).

Pseudo-groups vary with the bias model's folds, and so did the re-fit (test worst-group accuracy
47-72 over three seeds on one case), so ``N_BAGS`` independent inferences are each re-fitted and
their heads averaged (the heads are linear, so the average is one head). The numbers behind each
choice are in ``benchmarks/results/quality_notes.md``.

Two checks keep it from doing harm:

gate
    If the held-out data already break the shortcut (e.g. they are group-balanced), ``pgdfr``
    returns a plain class-balanced re-fit: on such data the bias model's mistakes are merely the
    hard samples, and balancing them costs 5-20 points. Two label-free signs, either one opens it:
    a cross-fitted class-balanced re-fit beats the original head's balanced (mean per-class)
    accuracy on the held-out set by more than ``GATE_MARGIN`` (the data teach something the
    original did not learn); or the original head's mean confidence exceeds its accuracy on the
    held-out set by more than ``GATE_CONFIDENCE_GAP`` (it is confidently wrong on many samples,
    which it is not on data distributed like its training data). The second sign was added when
    the first stayed shut on group-balanced data of a hard task (original 0.69, re-fit 0.72-0.75);
    on the benchmark the gap was -0.16 to +0.04 on every biased held-out set and +0.12 to +0.46 on
    the balanced sets of every image case.
guard
    The pseudo-group re-fit's cross-fitted worst pseudo-group accuracy (each sample predicted by
    a fit that did not see it) is compared with the original head's on the same samples; if the
    re-fit's estimate is lower, the original head is kept (``kept_original``). On the gate's
    branch the estimate is the gate's own (cross-fitted balanced accuracy), which the re-fit wins
    by construction: on data without a shortcut the pseudo-minority is merely the hard samples.

As a ``--method``, ``pgdfr`` fits on every labelled sample the pipeline passes (identification
and tuning parts together): it cross-fits internally and needs no split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ntonnx.method.base import FitInputs, Method, Refit
from ntonnx.method.dfr import C_GRID, N_DRAWS, fit_dfr
from ntonnx.method.metrics import balanced_accuracy, predict, worst_group_accuracy
from ntonnx.method.pseudo_groups import PseudoGroups, bias_model_groups, stratified_folds
from ntonnx.method.solve import class_balanced_weights, class_probabilities, fit_head, group_balanced_weights

logger = logging.getLogger("ntonnx")

#: The gate opens when the cross-fitted class-balanced re-fit's balanced accuracy beats the original's by this.
GATE_MARGIN = 0.05
#: The gate also opens when the original head's mean confidence exceeds its held-out accuracy by this.
GATE_CONFIDENCE_GAP = 0.10
#: Folds of the gate's cross-fitted class-balanced re-fit.
GATE_FOLDS = 5
#: Ridge of the class-balanced re-fit (``llr``'s default).
LLR_L2 = 1e-3
#: Ridges (:func:`ntonnx.method.solve.fit_head`'s convention) the weighted re-fit chooses from:
#: from ``llr``'s to one that leaves only the strongest direction.
WEIGHTED_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: Independent pseudo-group inferences whose re-fitted heads are averaged (see the module docstring).
N_BAGS = 3
#: Seed offset between bags (far from the offsets the gate, the refinement and the halves add).
_BAG_SEED_STRIDE = 7919


@dataclass
class PGDFRFit:
    """The re-fit ``pgdfr`` returns, and the label-free estimates that chose it.

    Attributes
    ----------
    W : ndarray of shape (n_logits, dim); the original head's when ``kept_original``.
    b : ndarray of shape (n_logits,)
    branch : ``"pseudo-group dfr"`` (or ``"pseudo-group weighted"``), or ``"class-balanced"`` (the gate opened).
    kept_original : the guard kept the original head.
    gate_original : the original head's balanced accuracy on the held-out data.
    gate_refit : the cross-fitted class-balanced re-fit's balanced accuracy on the held-out data.
    confidence_gap : the original head's mean top probability minus its accuracy on the held-out data.
    guard_refit : the chosen re-fit's cross-fitted worst pseudo-group accuracy (balanced accuracy
        on the class-balanced branch).
    guard_original : the original head's on the same samples.
    C : per bag, DFR's chosen inverse L1 strength (NaN on the other branches).
    l2 : per bag, the weighted re-fit's chosen ridge (NaN on the other branches).
    minority_counts : ndarray of shape (n_classes,), pseudo-minority samples per class (first bag).
    holdout_predictions : ndarray of shape (n_samples,), the first bag's cross-fitted predictions.
    pseudo_groups : ndarray of shape (n_samples,), the first bag's pseudo-groups.
    """

    W: np.ndarray
    b: np.ndarray
    branch: str
    kept_original: bool
    gate_original: float
    gate_refit: float
    confidence_gap: float
    guard_refit: float
    guard_original: float
    C: list[float]
    l2: list[float]
    minority_counts: np.ndarray
    holdout_predictions: np.ndarray | None = None
    pseudo_groups: np.ndarray | None = None

    def summary(self) -> str:
        """One line for the log and the report."""
        head = "kept the original head" if self.kept_original else f"re-fit by {self.branch}"
        return (
            f"pgdfr: {head} (gate: balanced accuracy original {self.gate_original:.3f} vs class-balanced re-fit "
            f"{self.gate_refit:.3f}, original's confidence minus accuracy {self.confidence_gap:+.3f}; "
            f"guard: worst pseudo-group accuracy re-fit {self.guard_refit:.3f} vs original "
            f"{self.guard_original:.3f})"
        )


def fit_pgdfr(
    embeddings: np.ndarray,
    labels: np.ndarray,
    original: tuple[np.ndarray, np.ndarray],
    *,
    fit_intercept: bool = True,
    seed: int = 0,
    gate_margin: float = GATE_MARGIN,
    confidence_gap: float = GATE_CONFIDENCE_GAP,
    guard: bool = True,
    C_grid: tuple[float, ...] = C_GRID,
    n_draws: int = N_DRAWS,
    refit: str = "auto",
    n_bags: int = N_BAGS,
    pseudo: PseudoGroups | None = None,
) -> PGDFRFit:
    """Re-fit the head label-free on held-out activations (see the module docstring).

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, dim), the held-out embeddings (all of them: the
        method cross-fits internally, no identification/tuning split is needed).
    labels : ndarray of shape (n_samples,)
    original : the original head ``(W, b)``, W of shape (n_logits, dim).
    fit_intercept : False keeps ``b`` at zero (heads without a bias input).
    seed : seed of the folds, halves and subsamples.
    gate_margin : balanced-accuracy gain that opens the gate; ``inf`` (with ``confidence_gap``) disables the gate.
    confidence_gap : confidence-minus-accuracy gap of the original head that opens the gate.
    guard : False always returns the re-fit.
    refit : ``"weighted"`` (group-balanced weights on every sample, ridge chosen on pseudo-groups),
        ``"subsample"`` (DFR's recipe on the pseudo-groups), or ``"auto"``: subsample when
        ``n_samples <= dim + 1``, else weighted (see the module docstring).
    n_bags : independent pseudo-group inferences (new bias-model folds and halves each), each
        re-fitted; their heads are averaged.
    pseudo : the first bag's pseudo-groups if already inferred (the same ``seed``), else inferred here.
    """
    if refit not in ("auto", "subsample", "weighted"):
        raise ValueError(f"refit must be 'auto', 'subsample' or 'weighted', got {refit!r}")
    if n_bags < 1:
        raise ValueError(f"n_bags must be at least 1, got {n_bags}")
    if refit == "auto":
        refit = "subsample" if len(labels) <= embeddings.shape[1] + 1 else "weighted"
    W0, b0 = (np.asarray(a, dtype=np.float64) for a in original)
    n_logits = W0.shape[0]
    n_classes = max(n_logits, 2)
    labels = np.asarray(labels, dtype=np.int64)
    original_probabilities = class_probabilities(embeddings @ W0.T + b0)
    original_predictions = original_probabilities.argmax(axis=1)
    observed_gap = float(original_probabilities.max(axis=1).mean() - np.mean(original_predictions == labels))
    if pseudo is None:
        pseudo = bias_model_groups(embeddings, labels, n_classes, seed=seed)

    gate_refit_predictions = _cross_fitted_llr(embeddings, labels, original, fit_intercept, seed)
    gate_original = balanced_accuracy(original_predictions, labels)
    gate_refit = balanced_accuracy(gate_refit_predictions, labels)
    if gate_refit - gate_original > gate_margin or observed_gap > confidence_gap:
        fit = fit_head(
            embeddings,
            labels,
            n_logits=n_logits,
            sample_weight=class_balanced_weights(labels),
            l2=LLR_L2,
            init=(W0, b0),
            fit_intercept=fit_intercept,
        )
        # the gate's own comparison stands in for the guard: pseudo-groups found on data without a
        # shortcut are merely the hard samples, which the original head gets right by leaning on it
        bags = [_Bag(fit.W, fit.b, gate_refit_predictions, gate_refit, gate_original, float("nan"), float("nan"))]
        branch = "class-balanced"
    else:
        branch = "pseudo-group weighted" if refit == "weighted" else "pseudo-group dfr"
        bags = []
        for k in range(n_bags):
            bag_seed = seed + _BAG_SEED_STRIDE * k
            groups = pseudo if k == 0 else bias_model_groups(embeddings, labels, n_classes, seed=bag_seed)
            bag = _fit_bag(embeddings, labels, groups.groups, original, original_predictions, refit,
                           fit_intercept=fit_intercept, seed=bag_seed, C_grid=C_grid, n_draws=n_draws)  # fmt: skip
            bags.append(bag)
    W = np.mean([bag.W for bag in bags], axis=0)
    b = np.mean([bag.b for bag in bags], axis=0)
    guard_refit = float(np.mean([bag.guard_refit for bag in bags]))
    guard_original = float(np.mean([bag.guard_original for bag in bags]))
    kept = guard and guard_refit < guard_original
    if kept:
        W, b = W0.copy(), b0.copy()
    result = PGDFRFit(
        W=W,
        b=b,
        branch=branch,
        kept_original=bool(kept),
        gate_original=gate_original,
        gate_refit=gate_refit,
        confidence_gap=observed_gap,
        guard_refit=guard_refit,
        guard_original=guard_original,
        C=[bag.C for bag in bags],
        l2=[bag.l2 for bag in bags],
        minority_counts=pseudo.minority_counts(n_classes),
        holdout_predictions=bags[0].holdout,
        pseudo_groups=pseudo.groups,
    )
    logger.info(result.summary())
    return result


@dataclass
class _Bag:
    """One pseudo-group inference's re-fit and its guard statistics."""

    W: np.ndarray
    b: np.ndarray
    holdout: np.ndarray
    guard_refit: float
    guard_original: float
    C: float
    l2: float


def _fit_bag(
    embeddings: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    original: tuple[np.ndarray, np.ndarray],
    original_predictions: np.ndarray,
    refit: str,
    *,
    fit_intercept: bool,
    seed: int,
    C_grid: tuple[float, ...],
    n_draws: int,
) -> _Bag:
    """Re-fit on one bag's pseudo-groups; the guard compares its cross-fitted worst pseudo-group accuracy."""
    if refit == "weighted":
        W, b, holdout, l2 = _weighted_refit(embeddings, labels, groups, original, fit_intercept, seed)
        C = float("nan")
    else:
        dfr = fit_dfr(
            embeddings,
            labels,
            groups,
            n_logits=original[0].shape[0],
            C_grid=C_grid,
            n_draws=n_draws,
            seed=seed,
            fit_intercept=fit_intercept,
            original=original,
        )
        W, b, holdout, C, l2 = dfr.W, dfr.b, dfr.holdout_predictions, dfr.C, float("nan")
    return _Bag(
        W=W,
        b=b,
        holdout=holdout,
        guard_refit=worst_group_accuracy(holdout, labels, groups),
        guard_original=worst_group_accuracy(original_predictions, labels, groups),
        C=C,
        l2=l2,
    )


def _cross_fitted_llr(
    embeddings: np.ndarray,
    labels: np.ndarray,
    original: tuple[np.ndarray, np.ndarray],
    fit_intercept: bool,
    seed: int,
) -> np.ndarray:
    """Each sample's class predicted by a class-balanced re-fit on the other folds."""
    n_logits = original[0].shape[0]
    fold_of = stratified_folds(labels, GATE_FOLDS, np.random.default_rng(seed + 1))
    predictions = np.empty(len(labels), dtype=np.int64)
    for f in range(GATE_FOLDS):
        test = fold_of == f
        if not test.any():
            continue
        fit = fit_head(
            embeddings[~test],
            labels[~test],
            n_logits=n_logits,
            sample_weight=class_balanced_weights(labels[~test]),
            l2=LLR_L2,
            init=original,
            fit_intercept=fit_intercept,
        )
        predictions[test] = predict(embeddings[test] @ fit.W.T + fit.b)
    return predictions


def _weighted_refit(
    embeddings: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    original: tuple[np.ndarray, np.ndarray],
    fit_intercept: bool,
    seed: int,
    l2_grid: tuple[float, ...] = WEIGHTED_L2_GRID,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Group-balanced L2 re-fit on every sample, its ridge chosen as DFR chooses ``C``.

    Every ridge of ``l2_grid`` is fitted on each stratified half and scored by the worst
    pseudo-group accuracy on the other half (mean of both directions; ties go to the stronger
    ridge). Returns ``(W, b, holdout, l2)``: the chosen ridge fitted on everything, and each
    sample's class predicted by that ridge's fit on the other half.
    """

    def fit(rows: np.ndarray, l2: float):
        return fit_head(
            embeddings[rows],
            labels[rows],
            n_logits=original[0].shape[0],
            sample_weight=group_balanced_weights(groups[rows]),
            l2=l2,
            init=original,
            fit_intercept=fit_intercept,
        )

    fold_of = stratified_folds(groups, 2, np.random.default_rng(seed + 3))
    holdout = {l2: np.empty(len(labels), dtype=np.int64) for l2 in l2_grid}
    validation = {l2: 0.0 for l2 in l2_grid}
    for f in range(2):
        scored = fold_of == f
        for l2 in l2_grid:
            half = fit(~scored, l2)
            holdout[l2][scored] = predict(embeddings[scored] @ half.W.T + half.b)
            validation[l2] += worst_group_accuracy(holdout[l2][scored], labels[scored], groups[scored]) / 2
    best = max(l2_grid, key=lambda l2: (validation[l2], l2))
    full = fit(np.ones(len(labels), dtype=bool), best)
    return full.W, full.b, holdout[best], best


class Pgdfr(Method):
    name = "pgdfr"
    summary = (
        "label-free DFR: a re-fit balancing bias-model pseudo-groups (weights, or DFR's subsampling when "
        "samples <= dimensions), 3 bags averaged, with a gate and a no-harm guard"
    )
    uses_all_heldout = True

    def fit(self, inputs: FitInputs) -> Refit:
        data = inputs.tuning
        fit = fit_pgdfr(
            data.embeddings,
            data.labels,
            inputs.original,
            fit_intercept=inputs.fit_intercept,
            seed=inputs.options.seed,
            guard=not inputs.options.force_write,
        )
        details = {
            "branch": fit.branch,
            "kept_original": fit.kept_original,
            "gate": {
                "original_balanced_accuracy": fit.gate_original,
                "refit_balanced_accuracy": fit.gate_refit,
                "original_confidence_minus_accuracy": fit.confidence_gap,
            },
            "guard": {"refit": fit.guard_refit, "original": fit.guard_original},
            "C": [None if np.isnan(c) else c for c in fit.C],
            "l2": [None if np.isnan(v) else v for v in fit.l2],
            "pseudo_minority_per_class": fit.minority_counts.tolist(),
            "summary": fit.summary(),
        }
        selected = "original head (guard)" if fit.kept_original else fit.branch
        return Refit(
            W=fit.W, b=fit.b, converged=None, selected=selected, kept_original=fit.kept_original, details=details
        )


METHOD = Pgdfr()
