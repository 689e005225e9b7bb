"""The re-fitting methods, each a choice of neurons to drop and sample weights for one solver.

============  ==========================================================  =============
method        what it does                                                group labels
============  ==========================================================  =============
erm           keep the original head (evaluation only)                    no
llr           class-balanced re-fit, no suppression (the ablation)        no
neurontune    suppress neurons with delta > threshold, class-balanced      no
dfr           group-balanced re-fit (upper reference)                     yes
afr           weights exp(-gamma * p_true), pulled to the original head   no
auto          the best of 31 re-fits by worst pseudo-group accuracy        no
              (see :mod:`ntonnx.selection`; beyond the paper)
============  ==========================================================  =============
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from ntonnx.errors import DataError, UsageError
from ntonnx.metrics import predict
from ntonnx.neurons import RULES, NeuronScores, select_spurious, spuriousness_scores
from ntonnx.runtime import Activations
from ntonnx.selection import select_head
from ntonnx.solve import HeadFit, afr_weights, class_balanced_weights, fit_head, group_balanced_weights

logger = logging.getLogger("ntonnx")

METHODS: tuple[str, ...] = ("neurontune", "llr", "dfr", "afr", "erm", "auto")


@dataclass(frozen=True)
class TuneOptions:
    """Settings of a re-fit; the defaults are the paper's NeuronTune.

    Attributes
    ----------
    method : one of :data:`METHODS`.
    rule : ``"all"`` (paper) or ``"any"``: a neuron is spurious if its score exceeds
        ``threshold`` for all / for some classes (``auto`` selects no single neurons).
    threshold : the paper's lambda.
    l2 : ridge strength on standardised embeddings (``auto`` searches its own grid).
    afr_gamma : AFR's temperature on the original model's true-class probability.
    split : share of each class used for identification when one data set plays both roles.
    seed : seed of that split.
    max_iter : L-BFGS iteration limit.
    """

    method: str = "neurontune"
    rule: str = "all"
    threshold: float = 0.0
    l2: float = 1e-3
    afr_gamma: float = 4.0
    split: float = 0.5
    seed: int = 0
    max_iter: int = 1000

    def __post_init__(self):
        if self.method not in METHODS:
            raise UsageError(f"--method '{self.method}' is not one of {', '.join(METHODS)}")
        if self.rule not in RULES:
            raise UsageError(f"--rule '{self.rule}' is not one of {', '.join(RULES)}")
        for name in ("threshold", "l2", "afr_gamma", "split"):
            if not np.isfinite(getattr(self, name)):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if self.l2 < 0:
            raise UsageError(f"--l2 must be >= 0, got {self.l2}")
        if not 0 < self.split < 1:
            raise UsageError(f"--split must be strictly between 0 and 1, got {self.split}")
        if self.max_iter < 1:
            raise UsageError(f"--max-iter must be >= 1, got {self.max_iter}")

    @property
    def needs_identification(self) -> bool:
        return self.method in ("neurontune", "auto")

    def to_dict(self) -> dict:
        return asdict(self)


def identify_spurious(
    identification: Activations, n_logits: int, options: TuneOptions
) -> tuple[NeuronScores, np.ndarray]:
    """NeuronTune's step 2-3: scores from the original model's own mistakes, then the selection.

    Returns the scores and the sorted indices of the neurons to suppress (none for ``auto``,
    which uses the scores as directions, see :mod:`ntonnx.selection`).
    """
    n_classes = max(n_logits, 2)
    scores = spuriousness_scores(
        identification.embeddings, identification.labels, predict(identification.logits), n_classes
    )
    for y in scores.unscored_classes:
        logger.warning(
            "class %d has %d misclassified and %d correct identification samples: it gives no neuron scores",
            y,
            scores.n_wrong[y],
            scores.n_right[y],
        )
    if options.method == "auto":
        return scores, np.array([], dtype=np.int64)
    suppressed = select_spurious(scores, options.rule, options.threshold)
    # Dead neurons (constant on the data) carry nothing; if every live one is selected, the re-fit
    # head could only output its bias.
    live = np.flatnonzero(np.ptp(identification.embeddings, axis=0) > 0)
    if live.size and np.isin(live, suppressed).all():
        raise UsageError(
            f"all {live.size} active embedding neurons scored as spurious (rule '{options.rule}', "
            f"threshold {options.threshold}); raise --threshold or use --rule all"
        )
    return scores, suppressed


def refit_head(
    options: TuneOptions,
    tuning: Activations,
    original: tuple[np.ndarray, np.ndarray],
    *,
    suppressed: np.ndarray,
    fit_intercept: bool,
    identification: Activations | None = None,
    scores: NeuronScores | None = None,
) -> HeadFit | None:
    """Re-fit the head on ``tuning`` with ``suppressed`` neurons dropped; None for ``erm``.

    ``auto`` also needs the ``identification`` activations and their ``scores``, and returns a
    :class:`ntonnx.selection.SelectedFit` naming the re-fit it chose.
    """
    if options.method == "erm":
        return None
    n_classes = max(original[0].shape[0], 2)
    missing = np.setdiff1d(np.arange(n_classes), tuning.labels)
    if missing.size:
        raise DataError(
            f"the tuning data has no samples of class(es) {missing.tolist()}; re-fitting the head needs "
            "samples of every class the model predicts"
        )
    if options.method == "auto":
        if identification is None or scores is None:
            raise ValueError("method 'auto' needs the identification activations and their scores")
        return select_head(
            identification, tuning, original, scores.delta, fit_intercept=fit_intercept, max_iter=options.max_iter
        )
    anchor, l2 = 0.0, options.l2
    if options.method in ("neurontune", "llr"):
        weights = class_balanced_weights(tuning.labels)
    elif options.method == "dfr":
        if tuning.groups is None:
            raise UsageError("--method dfr needs group labels: add a 'groups' array to the tuning data")
        weights = group_balanced_weights(tuning.groups)
    else:  # afr: re-weight by the original model's confidence and pull towards its head
        weights = afr_weights(tuning.logits, tuning.labels, options.afr_gamma)
        anchor, l2 = options.l2, 0.0
    return fit_head(
        tuning.embeddings,
        tuning.labels,
        n_logits=original[0].shape[0],
        sample_weight=weights,
        suppressed=suppressed,
        l2=l2,
        init=original,
        anchor_strength=anchor,
        fit_intercept=fit_intercept,
        max_iter=options.max_iter,
    )
