"""Labelled held-out data as the model sees it: batches of model inputs, plus labels and groups.

Every source (arrays, image folders, tables, text) is a :class:`Dataset`: labels and groups are
known up front as arrays (they come from a manifest, a table column or an array), while the
model inputs are produced batch by batch, so a data set larger than memory can be streamed
through the model. This module holds that abstraction, the array form (an ``.npz`` archive
loaded in memory, or a folder of ``.npy`` files memory-mapped) and the checks against the
model's declared inputs, so that a mistake is reported with the file and array name before any
model run. Groups are carried only for evaluation; no method but ``dfr`` ever reads them.
"""

from __future__ import annotations

import importlib
import logging
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from ntonnx.errors import DataError, MissingDependencyError
from ntonnx.labels import encode_groups, encode_labels

logger = logging.getLogger("ntonnx")

LABELS_KEY = "labels"
GROUPS_KEY = "groups"

T = TypeVar("T")


@dataclass(frozen=True)
class InputSpec:
    """A model input as onnxruntime declares it: name, numpy dtype, shape (None/str = free dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]


class Dataset(ABC):
    """Labelled samples whose model inputs are produced batch by batch.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,), int64 class indices.
    groups : ndarray of shape (n_samples,) of int64 group ids, or None. Evaluation only.
    source : where it came from, for messages and the report.
    class_names : the class name of each index when labels were given as names, else None.
    group_names : the group name of each id when groups were given as names, else None.
    """

    labels: np.ndarray
    groups: np.ndarray | None
    source: str
    class_names: list[str] | None = None
    group_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive batches of at most ``batch_size`` samples, in order, as onnxruntime feeds.

        A batch may be released by the producer once the next one is requested: consumers that
        keep batches must copy them.
        """

    def head(self, n: int) -> HeldOutData:
        """The first ``n`` samples (or all, if fewer) in memory, e.g. to verify a written model."""
        stream = self.batches(n)
        try:
            first = next(stream)
        finally:
            stream.close()
        count = len(next(iter(first.values())))
        return HeldOutData(
            inputs={name: np.array(array) for name, array in first.items()},
            labels=self.labels[:count],
            groups=None if self.groups is None else self.groups[:count],
            source=self.source,
            class_names=self.class_names,
            group_names=self.group_names,
        )


@dataclass
class HeldOutData(Dataset):
    """A labelled data set held as one array per model input (in memory or memory-mapped).

    Attributes
    ----------
    inputs : mapping input name -> ndarray of shape (n_samples, ...).
    labels : ndarray of shape (n_samples,), int64 class indices.
    groups : ndarray of shape (n_samples,) of int64 group ids, or None. Evaluation only.
    source : where it came from, for messages and the report.
    class_names, group_names : see :class:`Dataset`.
    deferred : input name -> model dtype for inputs whose dtype conversion and NaN/Inf check
        happen batch by batch (memory-mapped arrays, which must not be read whole); empty when
        ``inputs`` are already checked and in the model's dtype.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray | None
    source: str
    class_names: list[str] | None = None
    group_names: list[str] | None = None
    deferred: dict[str, np.dtype] | None = None

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive slices of at most ``batch_size`` samples, as onnxruntime feeds."""
        deferred = self.deferred or {}
        for start in range(0, len(self), batch_size):
            feed = {}
            for name, array in self.inputs.items():
                part = array[start : start + batch_size]
                if name in deferred:
                    part = np.ascontiguousarray(part, dtype=deferred[name])
                    check_finite(part, f"data '{self.source}': array '{name}'", start)
                feed[name] = part
            yield feed


class StreamingDataset(Dataset):
    """A data set whose batches are made (decoded, tokenized, read) while the model runs.

    Subclasses implement :meth:`produce`, which makes batches in a compact form (e.g. uint8
    pixels) one ahead in a background thread, so preparing batch ``k + 1`` overlaps the model's
    work on batch ``k``; :meth:`finish` turns one into model inputs (e.g. float32 tensors) when
    it is requested, after the caller has let go of the previous batch. At most one batch in the
    model's form exists at a time, plus one in the compact form (two while converting).
    """

    def __init__(
        self,
        labels: np.ndarray,
        groups: np.ndarray | None,
        source: str,
        class_names: list[str] | None = None,
        group_names: list[str] | None = None,
    ):
        self.labels = labels
        self.groups = groups
        self.source = source
        self.class_names = class_names
        self.group_names = group_names

    @abstractmethod
    def produce(self, batch_size: int) -> Iterator:
        """The batches in order, in their compact form, made in the calling thread."""

    def finish(self, made) -> dict[str, np.ndarray]:
        """Model inputs from what :meth:`produce` made (by default, it already is)."""
        return made

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for made in prefetched(self.produce(batch_size)):
            box = [self.finish(made)]
            del made  # only the model's form of this batch stays while the caller uses it
            yield box.pop()  # and this frame keeps no reference to it (see prefetched)


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items`` while a background thread already makes the next one.

    The next item is requested only when the current one is handed out, so at most two exist
    at once (the one the caller uses and the one being made). Errors raised while making an
    item surface in the caller, at the point that item is requested.
    """
    end = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ntonnx-data") as pool:
        pending = pool.submit(next, items, end)
        try:
            while True:
                # Hold the item only in a box emptied as it is yielded: a suspended generator
                # keeps its locals, and the caller may want the item gone before asking again.
                box = [pending.result()]
                if box[0] is end:
                    return
                pending = pool.submit(next, items, end)
                yield box.pop()
        finally:
            # The producer may still be running when the caller stops early; a generator cannot
            # be closed while it executes in another thread, so wait for it first.
            if not pending.cancel():
                pending.exception()
            close = getattr(items, "close", None)
            if close is not None:
                close()


def check_finite(batch: np.ndarray, where: str, offset: int) -> None:
    """Raise a :class:`DataError` naming the first sample of ``batch`` with a NaN or Inf."""
    if batch.dtype.kind != "f" or not len(batch):
        return
    rows = batch.reshape(len(batch), -1)
    # ~16 MB at a time: a mask of the whole array would cost a quarter of its size, and is slower
    step = max(1, (1 << 24) // max(rows.shape[1] * rows.itemsize, 1))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        if np.isfinite(chunk).all():
            continue
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        raise DataError(f"{where}: sample {offset + start + int(bad[0])} contains NaN or Inf")


def require_extra(module: str, extra: str, purpose: str):
    """Import an optional dependency lazily, naming the extra that installs it when absent."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package; install it with pip install 'ntonnx[{extra}]'"
        ) from None


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


def validate_heldout(
    arrays: dict[str, np.ndarray],
    input_specs: list[InputSpec],
    n_classes: int,
    source: str,
    lazy: bool = False,
    classes: Sequence[str] | None = None,
) -> HeldOutData:
    """Check named arrays against the model and return them as :class:`HeldOutData`.

    float64 arrays for float32 inputs are converted with a notice (NumPy's default dtype is an
    honest mistake); any other dtype mismatch, a wrong shape, a missing array, NaN/Inf, labels
    outside ``[0, n_classes)`` or an empty set is refused. With ``lazy`` (memory-mapped arrays)
    the conversion and the NaN/Inf check are done batch by batch instead of on the whole array.
    Labels (and groups) given as strings are class names, mapped through ``classes`` if given
    (see :func:`ntonnx.labels.encode_labels`).
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
    return HeldOutData(
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


def dims(spec: InputSpec) -> str:
    """A model input's shape as text, free dims by name or '?'."""
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in spec.shape) + ")"
