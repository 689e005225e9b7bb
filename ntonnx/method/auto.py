"""``auto``: label-free model selection, a re-fit picked by its worst pseudo-group accuracy.

Why
---
On held-out data as biased as the training data, no single re-fit works everywhere (see
``benchmarks/results/quality.md``): a class-balanced re-fit keeps leaning on the spurious
attribute, up-weighting the original model's mistakes flips some models and rescues others, and
the right ridge strength differs by orders of magnitude between embeddings. DFR settles this with
group labels on a validation set. Without them we need a stand-in for "accuracy on the minority
groups", and NeuronTune's own scores give one:

``delta[y]`` (median embedding of class ``y``'s mistakes minus that of its successes) points from
the typical member of class ``y`` towards the members the model gets wrong, i.e. towards the
samples that carry the spurious attribute of another class. Ranking the samples of class ``y`` by
their projection on ``delta[y]`` separates the true minority groups far better than the model's
errors or its confidence do (within-class AUC 0.96-0.99 on the two image cases of the benchmark,
against 0.87-0.98 for ``1 - p_true`` and 0.72-0.80 for "was wrong"). The ``k_y`` top-ranked
samples of class ``y``, where ``k_y`` is the number of the model's mistakes in that class, form
its *pseudo-minority*; the rest its pseudo-majority. A candidate's score is its worst accuracy
over these pseudo-groups on the identification set, which no candidate is fitted on.

The candidates are re-fits on the tuning set that share one solver (:func:`ntonnx.method.solve.fit_head`):

``llr``           class-balanced, ridge ``l2``;
``direction``     class-balanced, with the ``delta`` directions projected out of the embedding
                  (NeuronTune's suppression applied to directions instead of single neurons: on
                  the benchmark's cases the attribute is spread over many neurons, and zeroing even
                  the neurons that group labels single out gains nothing);
``pseudo-group``  balanced over (class, original model right or wrong);
``afr``           AFR's weights ``exp(-gamma * p_true)``, pulled towards the original head.

Group labels are never read here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ntonnx.activations import Activations
from ntonnx.method.base import FitInputs, Method, Refit
from ntonnx.method.metrics import predict, worst_group_accuracy
from ntonnx.method.solve import HeadFit, afr_weights, class_balanced_weights, fit_head, pseudo_group_weights

logger = logging.getLogger("ntonnx")

FAMILIES: tuple[str, ...] = ("llr", "direction", "pseudo-group", "afr")
_RIDGES = (1e-3, 1e-1, 1.0, 10.0, 100.0)
_AFR_GAMMAS = (1.0, 2.0, 4.0, 8.0)
_AFR_ANCHORS = (1e-2, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class Candidate:
    """One re-fit: a family of sample weights / suppression and its strengths.

    Attributes
    ----------
    family : one of :data:`FAMILIES`.
    l2 : ridge towards zero (standardised features).
    gamma : AFR's temperature (``afr`` only).
    anchor : pull towards the original head (``afr`` only).
    """

    family: str
    l2: float = 0.0
    gamma: float = 0.0
    anchor: float = 0.0

    @property
    def name(self) -> str:
        if self.family == "afr":
            return f"afr(gamma={self.gamma:g}, anchor={self.anchor:g})"
        return f"{self.family}(l2={self.l2:g})"


#: The grid ``--method auto`` searches, in tie-breaking order (earlier wins a tie).
CANDIDATES: tuple[Candidate, ...] = (
    *(Candidate(family, l2=l2) for family in ("llr", "direction", "pseudo-group") for l2 in _RIDGES),
    *(Candidate("afr", gamma=g, anchor=a) for g in _AFR_GAMMAS for a in _AFR_ANCHORS),
)


def direction_pseudo_groups(
    embeddings: np.ndarray, labels: np.ndarray, predictions: np.ndarray, delta: np.ndarray
) -> np.ndarray:
    """Pseudo-groups ``2 * y + m``: ``m = 1`` for the samples of class ``y`` most aligned with ``delta[y]``.

    Class ``y`` gets as many pseudo-minority samples as the model has mistakes on it (at least
    one, at most all but one); a class whose ``delta`` row is NaN (no score) stays one group.

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, dim)
    labels, predictions : ndarray of shape (n_samples,), true and predicted classes.
    delta : ndarray of shape (n_classes, dim), :attr:`ntonnx.method.neurons.NeuronScores.delta`.
    """
    groups = 2 * np.asarray(labels, dtype=np.int64)
    for y in np.unique(labels):
        if np.isnan(delta[y]).any():
            continue
        members = np.flatnonzero(labels == y)
        if len(members) < 2:
            continue
        k = int(np.clip((predictions[members] != y).sum(), 1, len(members) - 1))
        projection = embeddings[members] @ delta[y]
        groups[members[np.argsort(-projection, kind="stable")[:k]]] += 1
    return groups


def choose_refit(
    identification: Activations,
    tuning: Activations,
    original: tuple[np.ndarray, np.ndarray],
    delta: np.ndarray,
    *,
    fit_intercept: bool,
    max_iter: int = 1000,
    candidates: tuple[Candidate, ...] = CANDIDATES,
) -> Refit:
    """Fit every candidate on ``tuning`` and keep the best on ``identification``'s pseudo-groups.

    The result's ``selected`` names the chosen candidate and ``details["validation"]`` maps every
    candidate tried to its worst pseudo-group accuracy on the identification set.

    Ties go to the higher identification accuracy, then to the earlier candidate. Cost: one
    head solve per candidate (31 by default), plus one projected copy of the tuning embeddings
    for the ``direction`` family.

    Parameters
    ----------
    identification : activations the scores came from; the candidates are judged on them.
    tuning : activations the candidates are fitted on.
    original : the original head ``(W, b)``, W of shape (n_logits, dim).
    delta : ndarray of shape (n_classes, dim), the spuriousness scores of ``identification``.
    """
    groups = direction_pseudo_groups(
        identification.embeddings, identification.labels, predict(identification.logits), delta
    )
    basis = _orthonormal(delta[~np.isnan(delta).any(axis=1)])
    projected = None
    best: tuple[tuple[float, float], Candidate, HeadFit] | None = None
    validation: dict[str, float] = {}
    for candidate in candidates:
        if candidate.family == "direction":
            if basis.shape[1] == 0:
                continue
            if projected is None:
                projected = _project_out(tuning.embeddings, basis)
            fit = _fit(candidate, tuning, original, fit_intercept, max_iter, projected, basis)
        else:
            fit = _fit(candidate, tuning, original, fit_intercept, max_iter)
        predictions = predict(identification.embeddings @ fit.W.T + fit.b)
        score = worst_group_accuracy(predictions, identification.labels, groups)
        validation[candidate.name] = score
        key = (score, float((predictions == identification.labels).mean()))
        if best is None or key > best[0]:
            best = (key, candidate, fit)
    assert best is not None  # the llr family needs no scores, so something was fitted
    (score, _), chosen, fit = best
    logger.info("auto: chose %s (worst pseudo-group accuracy %.3f)", chosen.name, score)
    return Refit(W=fit.W, b=fit.b, converged=fit.converged, selected=chosen.name, details={"validation": validation})


def _fit(
    candidate: Candidate,
    tuning: Activations,
    original: tuple[np.ndarray, np.ndarray],
    fit_intercept: bool,
    max_iter: int,
    projected: np.ndarray | None = None,
    basis: np.ndarray | None = None,
) -> HeadFit:
    X, labels = tuning.embeddings, tuning.labels
    W0, b0 = (np.asarray(a, dtype=np.float64) for a in original)
    weights, l2, anchor = class_balanced_weights(labels), candidate.l2, 0.0
    if candidate.family == "pseudo-group":
        weights = pseudo_group_weights(tuning.logits, labels)
    elif candidate.family == "afr":
        weights, l2, anchor = afr_weights(tuning.logits, labels, candidate.gamma), 0.0, candidate.anchor
    elif candidate.family == "direction":
        # logits = (X P) @ W.T with P = I - U U^T symmetric, so the written head is W P: the
        # suppressed directions get no weight, exactly as zeroed columns do for single neurons.
        X, W0 = projected, _project_out(W0, basis)
    fit = fit_head(
        X,
        labels,
        n_logits=W0.shape[0],
        sample_weight=weights,
        l2=l2,
        init=(W0, b0),
        anchor_strength=anchor,
        fit_intercept=fit_intercept,
        max_iter=max_iter,
    )
    if candidate.family == "direction":
        fit.W = _project_out(fit.W, basis)
    return fit


def _orthonormal(directions: np.ndarray) -> np.ndarray:
    """Orthonormal basis, shape (dim, rank), of the span of the rows of ``directions``."""
    if len(directions) == 0:
        return np.zeros((directions.shape[1], 0))
    u, s, _ = np.linalg.svd(np.asarray(directions, dtype=np.float64).T, full_matrices=False)
    return u[:, s > s.max() * 1e-10] if s.max() > 0 else u[:, :0]


def _project_out(rows: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``rows`` with their components along the columns of ``basis`` removed (a new array)."""
    rows = np.asarray(rows, dtype=np.float64 if np.asarray(rows).dtype != np.float32 else np.float32)
    return rows - (rows @ basis.astype(rows.dtype)) @ basis.T.astype(rows.dtype)


class Auto(Method):
    name = "auto"
    summary = "the best of 31 re-fits by worst pseudo-group accuracy (label-free; ignores --l2)"
    needs_identification = True

    def fit(self, inputs: FitInputs) -> Refit:
        return choose_refit(
            inputs.identification,
            inputs.tuning,
            inputs.original,
            inputs.scores.delta,
            fit_intercept=inputs.fit_intercept,
            max_iter=inputs.options.max_iter,
        )


METHOD = Auto()
