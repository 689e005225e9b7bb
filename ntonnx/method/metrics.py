"""Accuracy overall, per class and per group, and the worst of each.

Worst-group accuracy is the number spurious-correlation work is judged by; worst-class accuracy
is what can be measured without group labels. Groups are only ever read here and by ``dfr``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def predict(logits: np.ndarray) -> np.ndarray:
    """Class predictions from head logits of shape (n_samples, n_classes); one logit: ``> 0``."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(axis=1)


@dataclass
class Metrics:
    """Accuracies of one model on one data set; per-group fields are None without groups."""

    n_samples: int
    accuracy: float
    per_class: dict[int, float]
    worst_class: float
    per_group: dict[int, float] | None = None
    group_sizes: dict[int, int] | None = None
    worst_group: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compute_metrics(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> Metrics:
    """Accuracy of ``predictions`` against ``labels``, by class and by group.

    Parameters
    ----------
    predictions, labels : ndarray of shape (n_samples,)
    groups : ndarray of shape (n_samples,) or None
    """
    correct = predictions == labels
    per_class = _mean_by(correct, labels)
    metrics = Metrics(
        n_samples=len(labels),
        accuracy=float(correct.mean()),
        per_class=per_class,
        worst_class=min(per_class.values()),
    )
    if groups is not None:
        metrics.per_group = _mean_by(correct, groups)
        metrics.group_sizes = {int(g): int(n) for g, n in zip(*np.unique(groups, return_counts=True), strict=True)}
        metrics.worst_group = min(metrics.per_group.values())
    return metrics


def accuracy_by(predictions: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> dict[int, float]:
    """Accuracy within each value of ``keys`` present (a class, group or pseudo-group); arrays of shape (n_samples,)."""
    return _mean_by(predictions == labels, keys)


def worst_group_accuracy(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Lowest accuracy over the groups present."""
    return min(accuracy_by(predictions, labels, groups).values())


def balanced_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean of the per-class accuracies of the classes present."""
    return float(np.mean(list(accuracy_by(predictions, labels, labels).values())))


def _mean_by(correct: np.ndarray, keys: np.ndarray) -> dict[int, float]:
    return {int(k): float(correct[keys == k].mean()) for k in np.unique(keys)}
