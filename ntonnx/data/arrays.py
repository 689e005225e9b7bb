"""Data given as arrays: an ``.npz`` archive (read whole) or a folder of ``.npy`` files (memory-mapped).

One array per model input, named after it, plus ``labels`` and optionally ``groups``. The arrays
are checked against the model's declared inputs here, so that a mistake is reported with the file
and array name before any model run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ntonnx.activations import n_label_classes
from ntonnx.data.dataset import ArrayDataset, InputSpec, check_finite, dims
from ntonnx.data.labels import encode_groups, encode_labels
from ntonnx.errors import DataError

logger = logging.getLogger("ntonnx")

LABELS_KEY = "labels"
GROUPS_KEY = "groups"


def load_npy_folder(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-map every ``<name>.npy`` in a folder, so that only the batch being fed is read."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"data folder '{path}' does not exist")
    files = sorted(path.glob("*.npy"))
    if not files:
        raise DataError(f"data folder '{path}' has no .npy files (expected one per model input plus 'labels.npy')")
    arrays = {}
    for file in files:
        try:
            arrays[file.stem] = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"data file '{file}' is not a readable .npy array ({exc})") from None
    return arrays


def validate_arrays(
    arrays: dict[str, np.ndarray],
    input_specs: list[InputSpec],
    n_classes: int,
    source: str,
    lazy: bool = False,
    classes: Sequence[str] | None = None,
) -> ArrayDataset:
    """Check named arrays against the model and return them as :class:`ArrayDataset`.

    float64 arrays for float32 inputs are converted with a notice (NumPy's default dtype is an
    honest mistake); any other dtype mismatch, a wrong shape, a missing array, NaN/Inf, labels
    outside ``[0, n_classes)`` or an empty set is refused. With ``lazy`` (memory-mapped arrays)
    the conversion and the NaN/Inf check are done batch by batch instead of on the whole array.
    Labels (and groups) given as strings are class names, mapped through ``classes`` if given
    (see :func:`ntonnx.data.labels.encode_labels`).
    """
    if LABELS_KEY not in arrays:
        raise DataError(f"data '{source}' has no '{LABELS_KEY}' array (arrays: {sorted(arrays)})")
    raw_labels, class_names = np.asarray(arrays[LABELS_KEY]), None
    if raw_labels.dtype.kind in "US" or classes is not None:
        labels, class_names = encode_labels(raw_labels, n_classes, source, f"'{LABELS_KEY}'", classes)
    else:
        labels = _labels(raw_labels, n_classes, source)
    n = len(labels)
    if n == 0:
        raise DataError(f"data '{source}' has zero samples")
    inputs, deferred = {}, {}
    for spec in input_specs:
        if spec.name not in arrays:
            raise DataError(
                f"data '{source}' has no array for model input '{spec.name}' "
                f"(arrays: {sorted(arrays)}; expected one per input plus '{LABELS_KEY}')"
            )
        array = arrays[spec.name]
        _check_input(array, spec, n, source)
        if lazy:
            inputs[spec.name] = array
            deferred[spec.name] = spec.dtype
        else:
            inputs[spec.name] = array.astype(spec.dtype, copy=False)
            check_finite(inputs[spec.name], f"data '{source}': array '{spec.name}'", 0)
    extra = sorted(set(arrays) - {s.name for s in input_specs} - {LABELS_KEY, GROUPS_KEY})
    if extra:
        logger.warning("data '%s': ignoring arrays %s that are not model inputs", source, extra)
    groups, group_names = None, None
    if GROUPS_KEY in arrays:
        raw_groups = np.asarray(arrays[GROUPS_KEY])
        if raw_groups.dtype.kind in "US":
            groups, group_names = encode_groups(raw_groups, source, f"'{GROUPS_KEY}'")
        else:
            groups = _integer_vector(raw_groups, GROUPS_KEY, source)
        if len(groups) != n:
            raise DataError(f"data '{source}': '{GROUPS_KEY}' has {len(groups)} entries, '{LABELS_KEY}' has {n}")
    return ArrayDataset(
        inputs=inputs,
        labels=labels,
        groups=groups,
        source=source,
        class_names=class_names,
        group_names=group_names,
        deferred=deferred or None,
    )


def _labels(raw: np.ndarray, n_classes: int, source: str) -> np.ndarray:
    labels = _integer_vector(raw, LABELS_KEY, source)
    classes = n_label_classes(n_classes)
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


def _check_input(array: np.ndarray, spec: InputSpec, n: int, source: str) -> None:
    where = f"data '{source}': array '{spec.name}'"
    if array.dtype != spec.dtype:
        if array.dtype.kind == "f" and spec.dtype.kind == "f":
            logger.warning("%s is %s, model input is %s; converting", where, array.dtype, spec.dtype)
        elif not (
            array.dtype.kind in "iu" and spec.dtype.kind in "iu" and np.can_cast(array.dtype, spec.dtype, "same_kind")
        ):
            raise DataError(f"{where} has dtype {array.dtype}, model input needs {spec.dtype}")
    if array.ndim != len(spec.shape):
        raise DataError(f"{where} has shape {array.shape}, model input needs rank {len(spec.shape)} {dims(spec)}")
    if array.shape[0] != n:
        raise DataError(f"{where} has {array.shape[0]} samples, '{LABELS_KEY}' has {n}")
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=False), start=1):
        if isinstance(want, int) and got != want:
            raise DataError(f"{where} has shape {array.shape}, model input needs {dims(spec)} (axis {axis})")
