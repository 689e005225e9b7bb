"""Is the data's class order the model's? A check on the original model's predictions, before any re-fit.

Why
---
Labels given as names (an image folder, a CSV of strings) map to class indices in sorted order
unless ``--classes`` says otherwise, and nothing in an ONNX file forces that order to be the
model's: on a real two-class NSFW classifier the sorted folder order was the reverse of the
model's, the original model scored 19.4%, and the head was re-fitted to swapped labels without a
word. A re-fit can make any mapping look fine afterwards, so the check runs on the *original*
model's predictions, before anything is fitted.

How
---
Count the confusion matrix ``M[y, k]`` (data class ``y``, predicted model class ``k``) and find
the one-to-one assignment of data classes to model classes that maximises the number of samples
predicted as their assigned class (the Hungarian algorithm,
:func:`scipy.optimize.linear_sum_assignment`; rectangular when the data holds only some of the
classes). The diagonal gets a bonus of ``1 / (n_classes + 1)``: less than one sample in total, it
never outweighs a real gain but makes the data's own order win every tie.

"Far better"
------------
Let ``S`` be the data classes the best assignment moves. The mapping is refused when, on the samples
of ``S``, the best assignment's accuracy is at least :data:`MIN_GAIN` (30 points) above the data's
own order **and** at least :data:`MIN_RATIO` (2) times it **and** a majority
(:data:`MIN_BEST_ACCURACY`), over at least :data:`MIN_SAMPLES` (10) samples and
:data:`MIN_PER_CLASS` (3) samples per moved class on average. The last two conditions are against
chance: with labels unrelated to the predictions (a model that cannot do the task), a matching over
many small classes always finds a few classes whose one or two samples happen to share a prediction
(measured: random labels over 1000 ImageNet classes, 2 samples each, gave 0.1% -> 0.9% with 21
classes moved, which the first two conditions alone refused). A weak or biased model that is merely
confused between two classes (45% vs 55%) passes; a model that predicts one class where the data
says another most of the time (19% vs 81% on the NSFW model) does not. The criterion looks at the
moved classes only, so two swapped classes among 1000 are found even though overall accuracy barely
moves. Above :data:`MAX_CELLS` (some 5000 classes each way) the matching is skipped, with an info
log.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ntonnx.errors import DataError

logger = logging.getLogger("ntonnx")

#: Refuse when the best mapping is this much more accurate (absolute) on the classes it moves ...
MIN_GAIN = 0.30
#: ... and this many times as accurate ...
MIN_RATIO = 2.0
#: ... and at least this accurate (the model puts most of the moved classes' samples on their new classes) ...
MIN_BEST_ACCURACY = 0.5
#: ... on at least this many samples ...
MIN_SAMPLES = 10
#: ... and this many per moved class on average.
MIN_PER_CLASS = 3
#: Above this many cells (classes present x classes present or predicted) the check is skipped:
#: the matching would take minutes and gigabytes (about 5000 classes each way).
MAX_CELLS = 25_000_000
#: Moved classes named one by one in messages; the rest are counted.
_SHOWN = 5


@dataclass
class ClassMapping:
    """How the data's labels compare with the original model's predictions.

    Attributes
    ----------
    n_samples : samples compared.
    accuracy : accuracy with the data's class order.
    best_accuracy : accuracy with the best one-to-one reassignment of the data's classes.
    mapping : data class -> model class under that reassignment, for every class present in the data.
    moved : data classes the reassignment moves, sorted.
    moved_accuracy, moved_best_accuracy : the two accuracies on the samples of the moved classes.
    n_moved_samples : samples of the moved classes.
    """

    n_samples: int
    accuracy: float
    best_accuracy: float
    mapping: dict[int, int]
    moved: list[int]
    moved_accuracy: float
    moved_best_accuracy: float
    n_moved_samples: int

    @property
    def far_better(self) -> bool:
        """Whether the data's order is refused (see the module docstring for the criterion)."""
        return (
            self.n_moved_samples >= MIN_SAMPLES
            and self.n_moved_samples >= MIN_PER_CLASS * len(self.moved)
            and self.moved_best_accuracy - self.moved_accuracy >= MIN_GAIN
            and self.moved_best_accuracy >= MIN_RATIO * self.moved_accuracy
            and self.moved_best_accuracy >= MIN_BEST_ACCURACY
        )

    def to_dict(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "accuracy": self.accuracy,
            "best_accuracy": self.best_accuracy,
            "moved": {str(y): self.mapping[y] for y in self.moved},
            "far_better": self.far_better,
        }


def best_class_mapping(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> ClassMapping:
    """Compare the data's class order with the best one-to-one reassignment of its classes.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), data classes in ``[0, n_classes)``.
    predictions : ndarray of shape (n_samples,), the original model's predicted classes.
    n_classes : the model's classes (2 for a single-logit binary head).
    """
    from scipy.optimize import linear_sum_assignment

    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    present = np.unique(labels)
    # Columns: the classes present or predicted. A class nobody predicts scores 0 for every row, as
    # does the row's own column when unpredicted, so leaving such columns out loses no assignment.
    used = np.union1d(present, predictions)
    if len(present) * len(used) > MAX_CELLS:
        logger.info("class-order check skipped: %d x %d classes is too large a matching", len(present), len(used))
        return _unchanged(labels, predictions, present)
    rows_of, columns_of = np.searchsorted(present, labels), np.searchsorted(used, predictions)
    counts = np.bincount(rows_of * len(used) + columns_of, minlength=len(present) * len(used))
    matrix = counts.reshape(len(present), len(used)).astype(np.float64)
    # The bonus on each row's own column breaks ties towards no change (less than one sample in all).
    matrix[np.arange(len(present)), np.searchsorted(used, present)] += 1.0 / (n_classes + 1)
    rows, columns = linear_sum_assignment(matrix, maximize=True)
    mapping = {int(present[r]): int(used[c]) for r, c in zip(rows, columns, strict=True)}
    target = np.zeros(n_classes, dtype=np.int64)
    for y, k in mapping.items():
        target[y] = k
    moved = sorted(y for y, k in mapping.items() if y != k)
    in_moved = np.isin(labels, moved)
    n = max(len(labels), 1)
    n_moved = int(in_moved.sum())
    return ClassMapping(
        n_samples=len(labels),
        accuracy=float((predictions == labels).sum() / n),
        best_accuracy=float((predictions == target[labels]).sum() / n),
        mapping=mapping,
        moved=moved,
        moved_accuracy=float((predictions[in_moved] == labels[in_moved]).sum() / max(n_moved, 1)),
        moved_best_accuracy=float((predictions[in_moved] == target[labels[in_moved]]).sum() / max(n_moved, 1)),
        n_moved_samples=n_moved,
    )


def _unchanged(labels: np.ndarray, predictions: np.ndarray, present: np.ndarray) -> ClassMapping:
    """The result when no matching was run: the data's order, as it is."""
    accuracy = float((predictions == labels).mean()) if len(labels) else 0.0
    mapping = {int(y): int(y) for y in present}
    return ClassMapping(len(labels), accuracy, accuracy, mapping, [], 0.0, 0.0, 0)


def check_class_mapping(
    labels: np.ndarray,
    predictions: np.ndarray,
    n_classes: int,
    *,
    source: str,
    class_names: Sequence[str] | None = None,
    model_class_names: Sequence[str] | None = None,
) -> ClassMapping:
    """:func:`best_class_mapping`, raising :class:`DataError` (exit 4) when it is far better.

    The message names the mapping that fits and, when the labels were names, the exact
    ``--classes`` value that puts them in the model's order.

    Parameters
    ----------
    labels, predictions : ndarray of shape (n_samples,); see :func:`best_class_mapping`.
    source : the data set, for the message.
    class_names : the name of each data class index, or None when labels were integers.
    model_class_names : the model's own class names (from the graph), used to fill the
        ``--classes`` positions no data class takes.
    """
    result = best_class_mapping(labels, predictions, n_classes)
    if not result.far_better:
        return result

    def name(y: int) -> str:
        return repr(class_names[y]) if class_names is not None and y < len(class_names) else f"class {y}"

    pairs = ", ".join(f"{name(y)} -> model class {result.mapping[y]}" for y in result.moved[:_SHOWN])
    if len(result.moved) > _SHOWN:
        pairs += f", ... ({len(result.moved)} classes moved)"
    found = (
        f"data '{source}': the original model's predictions fit the labels far better in another class order "
        f"({100 * result.accuracy:.1f}% accuracy as labelled, {100 * result.best_accuracy:.1f}% with {pairs})"
    )
    if class_names is None:
        raise DataError(f"{found}; the labels are probably numbered differently from the model's outputs: relabel them")
    value = classes_option(result.mapping, class_names, n_classes, model_class_names)
    raise DataError(f"{found}; the class order is probably wrong: pass --classes {shlex.quote(value)}")


def classes_option(
    mapping: dict[int, int],
    class_names: Sequence[str],
    n_classes: int,
    model_class_names: Sequence[str] | None = None,
) -> str:
    """The ``--classes`` value that puts data class ``y`` (named ``class_names[y]``) at ``mapping[y]``.

    Names without samples keep their index when it is free, else take the first free one; model
    positions no name takes get the model's own name for them, else ``class_<index>``; trailing
    unnamed positions are left out.
    """
    slots: list[str | None] = [None] * n_classes
    for y, k in mapping.items():
        slots[k] = str(class_names[y])
    for y, name in enumerate(class_names):
        if y in mapping:
            continue
        free = y if y < n_classes and slots[y] is None else next(i for i, s in enumerate(slots) if s is None)
        slots[free] = str(name)
    last = max(i for i, s in enumerate(slots) if s is not None)
    taken = {s for s in slots if s is not None}
    for i in range(last + 1):
        if slots[i] is None:
            own = model_class_names[i] if model_class_names is not None and i < len(model_class_names) else None
            slots[i] = str(own) if own is not None and str(own) not in taken else f"class_{i}"
    return ",".join(slots[: last + 1])
