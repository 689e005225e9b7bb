"""Which embedding neurons carry a spurious signal: NeuronTune's identification step.

For every class ``y`` and neuron ``i`` the score is

    delta[y, i] = median(v_i | class y, misclassified) - median(v_i | class y, correctly classified)

computed on the identification set with the *original* model's predictions. A neuron that fires
more on the model's mistakes than on its successes carries a signal the model relies on where it
should not. The paper selects neurons whose score exceeds ``threshold`` for *all* classes; the
``any`` rule (some class) is offered for the binary case, where one class's mistakes often carry
the whole signal. A class with no mistakes or no successes gives no score and is reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

logger = logging.getLogger("ntonnx")

Rule = Literal["all", "any"]
RULES: tuple[str, ...] = ("all", "any")


@dataclass
class NeuronScores:
    """Per-class spuriousness scores.

    Attributes
    ----------
    delta : ndarray of shape (n_classes, dim); rows of classes without a score are NaN.
    n_wrong : ndarray of shape (n_classes,), misclassified samples per class.
    n_right : ndarray of shape (n_classes,), correctly classified samples per class.
    """

    delta: np.ndarray
    n_wrong: np.ndarray
    n_right: np.ndarray

    @property
    def scored_classes(self) -> np.ndarray:
        """Indices of the classes that have both mistakes and successes."""
        return np.flatnonzero(~np.isnan(self.delta).all(axis=1))

    @property
    def unscored_classes(self) -> np.ndarray:
        """Indices of the classes that contributed no score (no mistakes or no successes)."""
        return np.flatnonzero(np.isnan(self.delta).all(axis=1))


def spuriousness_scores(
    embeddings: np.ndarray, labels: np.ndarray, predictions: np.ndarray, n_classes: int
) -> NeuronScores:
    """Compute ``delta`` for every class and neuron.

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, dim)
    labels : ndarray of shape (n_samples,), true classes in ``[0, n_classes)``.
    predictions : ndarray of shape (n_samples,), the original model's predicted classes.
    n_classes : number of classes (2 for a single-logit binary head).
    """
    dim = embeddings.shape[1]
    delta = np.full((n_classes, dim), np.nan)
    n_wrong = np.zeros(n_classes, dtype=np.int64)
    n_right = np.zeros(n_classes, dtype=np.int64)
    for y in range(n_classes):
        in_class = labels == y
        wrong = in_class & (predictions != y)
        right = in_class & (predictions == y)
        n_wrong[y], n_right[y] = wrong.sum(), right.sum()
        if n_wrong[y] and n_right[y]:
            delta[y] = np.median(embeddings[wrong], axis=0) - np.median(embeddings[right], axis=0)
    return NeuronScores(delta=delta, n_wrong=n_wrong, n_right=n_right)


def identify(embeddings: np.ndarray, labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> NeuronScores:
    """:func:`spuriousness_scores`, saying in one log line which classes gave no score and why."""
    scores = spuriousness_scores(embeddings, labels, predictions, n_classes)
    unscored = scores.unscored_classes
    if unscored.size:
        shown = ", ".join(f"{y} ({scores.n_wrong[y]} wrong, {scores.n_right[y]} right)" for y in unscored[:5])
        more = f" and {unscored.size - 5} more" if unscored.size > 5 else ""
        logger.warning(
            "%d class(es) give no neuron scores (they need both misclassified and correct identification "
            "samples): %s%s",
            unscored.size,
            shown,
            more,
        )
    return scores


def select_spurious(scores: NeuronScores, rule: Rule = "all", threshold: float = 0.0) -> np.ndarray:
    """Indices of the neurons to suppress, sorted.

    ``rule="all"`` (the paper's): ``delta > threshold`` for every scored class. ``rule="any"``:
    for at least one scored class. Classes without a score are left out of both rules; when no
    class has a score, nothing is selected.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    scored = scores.delta[scores.scored_classes]
    if len(scored) == 0:
        return np.array([], dtype=np.int64)
    above = scored > threshold
    chosen = above.all(axis=0) if rule == "all" else above.any(axis=0)
    return np.flatnonzero(chosen)
