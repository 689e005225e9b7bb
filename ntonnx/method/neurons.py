"""Which embedding neurons carry a spurious signal: NeuronTune's identification step.

For every class ``y`` and neuron ``i`` the score is

    delta[y, i] = median(v_i | class y, misclassified) - median(v_i | class y, correctly classified)

computed on the identification set with the *original* model's predictions. A neuron that fires
more on the model's mistakes than on its successes carries a signal the model relies on where it
should not. The paper selects neurons whose score exceeds ``threshold`` for *all* classes; the
``any`` rule (some class) is offered for the binary case, where one class's mistakes often carry
the whole signal. A class with no mistakes or no successes gives no score and is reported.

A class that has identification samples but no score (typically: no mistakes) blocks the
``all`` rule: "delta > threshold for all classes" cannot hold where delta does not exist, and
the paper's rule is the conservative one, so nothing is selected (the re-fit is then ``llr``'s)
rather than letting the remaining classes decide alone, which in the binary case silently turns
``all`` into ``any``. Classes with no identification samples at all (held-out data covering only
some classes) are outside the rule: the data says nothing about them, and their head rows are
not re-fitted either.

Why ``all`` selects nothing on binary tasks, and the ``logit`` rule
-------------------------------------------------------------------
A neuron that encodes one attribute value fires *more* on one class's mistakes (the samples of
class 0 that carry class 1's attribute) and *less* on the other's, so ``delta > 0`` for all classes
never holds for it. Measured in the direction of each class's logit the two agree: on class
``y``'s mistakes the neuron moved towards the other classes' logits. :func:`select_logit` reads
``delta`` that way, ``delta[y, i] * sign(mean_{k != y} W[k, i] - W[y, i])``, in units of its
standard error (so one threshold fits every neuron's scale and every class's sample size), and
selects the neurons where it exceeds ``threshold`` for every scored class.
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
    stderr : ndarray of shape (n_classes, dim): the standard error of ``delta`` (large-sample
        error of a difference of medians, ``1.2533 * sqrt(var_wrong / n_wrong + var_right / n_right)``);
        NaN where ``delta`` is.
    n_wrong : ndarray of shape (n_classes,), misclassified samples per class.
    n_right : ndarray of shape (n_classes,), correctly classified samples per class.
    """

    delta: np.ndarray
    n_wrong: np.ndarray
    n_right: np.ndarray
    stderr: np.ndarray | None = None

    @property
    def scored_classes(self) -> np.ndarray:
        """Indices of the classes that have both mistakes and successes."""
        return np.flatnonzero(~np.isnan(self.delta).all(axis=1))

    @property
    def unscored_classes(self) -> np.ndarray:
        """Indices of the classes that contributed no score (no mistakes or no successes)."""
        return np.flatnonzero(np.isnan(self.delta).all(axis=1))

    @property
    def blocking_classes(self) -> np.ndarray:
        """Classes with identification samples but no score: they block the ``all`` rule."""
        return np.flatnonzero(np.isnan(self.delta).all(axis=1) & (self.n_wrong + self.n_right > 0))


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
    stderr = np.full((n_classes, dim), np.nan)
    n_wrong = np.zeros(n_classes, dtype=np.int64)
    n_right = np.zeros(n_classes, dtype=np.int64)
    for y in range(n_classes):
        in_class = labels == y
        wrong = in_class & (predictions != y)
        right = in_class & (predictions == y)
        n_wrong[y], n_right[y] = wrong.sum(), right.sum()
        if n_wrong[y] and n_right[y]:
            delta[y] = np.median(embeddings[wrong], axis=0) - np.median(embeddings[right], axis=0)
            variance = embeddings[wrong].var(axis=0) / n_wrong[y] + embeddings[right].var(axis=0) / n_right[y]
            stderr[y] = np.sqrt(np.pi / 2 * variance)
    return NeuronScores(delta=delta, n_wrong=n_wrong, n_right=n_right, stderr=stderr)


def identify(embeddings: np.ndarray, labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> NeuronScores:
    """:func:`spuriousness_scores`, saying in one log line (``-v``) which classes with samples gave no score."""
    scores = spuriousness_scores(embeddings, labels, predictions, n_classes)
    unscored = scores.blocking_classes
    if unscored.size:
        shown = ", ".join(f"{y} ({scores.n_wrong[y]} wrong, {scores.n_right[y]} right)" for y in unscored[:5])
        more = f" and {unscored.size - 5} more" if unscored.size > 5 else ""
        logger.info(
            "%d class(es) give no neuron scores (they need both misclassified and correct identification "
            "samples): %s%s",
            unscored.size,
            shown,
            more,
        )
    return scores


def select_spurious(scores: NeuronScores, rule: Rule = "all", threshold: float = 0.0) -> np.ndarray:
    """Indices of the neurons to suppress, sorted.

    ``rule="all"`` (the paper's): ``delta > threshold`` for every class with identification
    samples; a class among them without a score (no mistakes or no successes) therefore selects
    nothing (see the module docstring). ``rule="any"``: for at least one scored class. Classes
    without identification samples are outside both rules; when no class has a score, nothing is
    selected.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    scored = scores.delta[scores.scored_classes]
    if len(scored) == 0 or (rule == "all" and scores.blocking_classes.size):
        return np.array([], dtype=np.int64)
    above = scored > threshold
    chosen = above.all(axis=0) if rule == "all" else above.any(axis=0)
    return np.flatnonzero(chosen)


def select_logit(scores: NeuronScores, W: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """Indices of the neurons whose ``delta`` points away from every scored class's own logit, sorted.

    ``t[y, i] = delta[y, i] * sign(mean_{k != y} W[k, i] - W[y, i]) / stderr[y, i]``: positive when,
    on class ``y``'s mistakes, neuron ``i`` moved towards the other classes' logits. A neuron is
    selected when ``t > threshold`` (standard errors) for every scored class (see the module
    docstring for why this, unlike ``all``, holds for a neuron that encodes an attribute).

    Parameters
    ----------
    scores : from :func:`spuriousness_scores` (with ``stderr``).
    W : ndarray of shape (n_logits, dim), the original head's weights; one logit (a sigmoid
        head) counts as ``[0, W]``.
    threshold : in standard errors of ``delta``; 3 keeps a pure-noise neuron out with
        probability about 0.999 per class.
    """
    if scores.stderr is None:
        raise ValueError("select_logit needs scores with stderr (from spuriousness_scores)")
    W = np.asarray(W, dtype=np.float64)
    if W.shape[0] == 1:
        W = np.vstack([np.zeros_like(W), W])
    scored = scores.scored_classes
    if len(scored) == 0:
        return np.array([], dtype=np.int64)
    n_classes = W.shape[0]
    others = (W.sum(axis=0, keepdims=True) - W) / max(n_classes - 1, 1)
    direction = np.sign(others - W)[scored]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = scores.delta[scored] * direction / scores.stderr[scored]
    chosen = np.nan_to_num(t, nan=-np.inf) > threshold
    return np.flatnonzero(chosen.all(axis=0))
