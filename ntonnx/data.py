"""Labelled held-out data as the model sees it: one array per model input, labels, groups.

This module reads the ``.npz`` form (one array per model input, named as the input, plus
``labels`` and optional ``groups``) and checks it against the model's declared inputs, so that a
mistake is reported with the file and array name before any model run. Groups are carried only
for evaluation; no method but ``dfr`` ever reads them.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ntonnx.errors import DataError

logger = logging.getLogger("ntonnx")

LABELS_KEY = "labels"
GROUPS_KEY = "groups"


@dataclass(frozen=True)
class InputSpec:
    """A model input as onnxruntime declares it: name, numpy dtype, shape (None/str = free dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]


@dataclass
class HeldOutData:
    """A labelled data set ready to feed the model.

    Attributes
    ----------
    inputs : mapping input name -> ndarray of shape (n_samples, ...), in the model's dtype.
    labels : ndarray of shape (n_samples,), int64 class indices.
    groups : ndarray of shape (n_samples,) of int64 group ids, or None. Evaluation only.
    source : where it came from, for messages and the report.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive slices of at most ``batch_size`` samples, as onnxruntime feeds."""
        for start in range(0, len(self), batch_size):
            yield {name: array[start : start + batch_size] for name, array in self.inputs.items()}


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file, or raise a :class:`DataError` saying why not."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist")
    if path.is_dir():
        raise DataError(f"data path '{path}' is a directory; expected an .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"data file '{path}' is not a readable .npz archive ({exc})") from None
    if not isinstance(loaded, Mapping):
        raise DataError(f"data file '{path}' holds a single array; expected an .npz archive of named arrays")
    try:
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"data file '{path}' has an unreadable array ({exc})") from None


def read_heldout(path: str | os.PathLike, input_specs: list[InputSpec], n_classes: int) -> HeldOutData:
    """Load ``path`` and check it against the model's inputs and class count."""
    arrays = load_npz(path)
    return validate_heldout(arrays, input_specs, n_classes, source=str(path))


def validate_heldout(
    arrays: dict[str, np.ndarray], input_specs: list[InputSpec], n_classes: int, source: str
) -> HeldOutData:
    """Check named arrays against the model and return them as :class:`HeldOutData`.

    float64 arrays for float32 inputs are converted with a notice (NumPy's default dtype is an
    honest mistake); any other dtype mismatch, a wrong shape, a missing array, NaN/Inf, labels
    outside ``[0, n_classes)`` or an empty set is refused.
    """
    if LABELS_KEY not in arrays:
        raise DataError(f"data '{source}' has no '{LABELS_KEY}' array (arrays: {sorted(arrays)})")
    labels = _labels(arrays[LABELS_KEY], n_classes, source)
    n = len(labels)
    if n == 0:
        raise DataError(f"data '{source}' has zero samples")
    inputs = {}
    for spec in input_specs:
        if spec.name not in arrays:
            raise DataError(
                f"data '{source}' has no array for model input '{spec.name}' "
                f"(arrays: {sorted(arrays)}; expected one per input plus '{LABELS_KEY}')"
            )
        inputs[spec.name] = _model_input(arrays[spec.name], spec, n, source)
    extra = sorted(set(arrays) - {s.name for s in input_specs} - {LABELS_KEY, GROUPS_KEY})
    if extra:
        logger.warning("data '%s': ignoring arrays %s that are not model inputs", source, extra)
    groups = None
    if GROUPS_KEY in arrays:
        groups = _integer_vector(arrays[GROUPS_KEY], GROUPS_KEY, source)
        if len(groups) != n:
            raise DataError(f"data '{source}': '{GROUPS_KEY}' has {len(groups)} entries, '{LABELS_KEY}' has {n}")
    return HeldOutData(inputs=inputs, labels=labels, groups=groups, source=source)


def _labels(raw: np.ndarray, n_classes: int, source: str) -> np.ndarray:
    labels = _integer_vector(raw, LABELS_KEY, source)
    classes = max(n_classes, 2)  # a single-logit binary head still has two classes
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise DataError(
            f"data '{source}': '{LABELS_KEY}'[{bad[0]}] = {labels[bad[0]]} is outside the model's "
            f"classes 0..{classes - 1}"
        )
    return labels


def _integer_vector(raw: np.ndarray, key: str, source: str) -> np.ndarray:
    if raw.ndim != 1:
        raise DataError(f"data '{source}': '{key}' must be a vector, got shape {raw.shape}")
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    if raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
        return raw.astype(np.int64)
    raise DataError(f"data '{source}': '{key}' must hold integers, got dtype {raw.dtype}")


def _model_input(array: np.ndarray, spec: InputSpec, n: int, source: str) -> np.ndarray:
    where = f"data '{source}': array '{spec.name}'"
    if array.dtype != spec.dtype:
        if array.dtype.kind == "f" and spec.dtype.kind == "f":
            logger.warning("%s is %s, model input is %s; converting", where, array.dtype, spec.dtype)
            array = array.astype(spec.dtype)
        elif array.dtype.kind in "iu" and spec.dtype.kind in "iu" and np.can_cast(array.dtype, spec.dtype, "same_kind"):
            array = array.astype(spec.dtype)
        else:
            raise DataError(f"{where} has dtype {array.dtype}, model input needs {spec.dtype}")
    if array.ndim != len(spec.shape):
        raise DataError(f"{where} has shape {array.shape}, model input needs rank {len(spec.shape)} {_dims(spec)}")
    if array.shape[0] != n:
        raise DataError(f"{where} has {array.shape[0]} samples, '{LABELS_KEY}' has {n}")
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=False), start=1):
        if isinstance(want, int) and got != want:
            raise DataError(f"{where} has shape {array.shape}, model input needs {_dims(spec)} (axis {axis})")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise DataError(f"{where}: sample {int(np.flatnonzero(bad)[0])} contains NaN or Inf")
    return array


def _dims(spec: InputSpec) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in spec.shape) + ")"
