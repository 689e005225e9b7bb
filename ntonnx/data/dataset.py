"""Labelled data as the model sees it: batches of model inputs, plus labels and groups.

Every source (arrays, image folders, tables, text) is a :class:`Dataset`: labels and groups are
known up front as arrays (they come from a manifest, a table column or an array), while the
model inputs are produced batch by batch, so a data set larger than memory can be streamed
through the model. The array form lives in :mod:`ntonnx.data.arrays`, the other forms in their
own modules, and :func:`ntonnx.data.open.open_dataset` picks one. Groups are carried only for
evaluation; no method but ``dfr`` ever reads them.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ntonnx.errors import DataError, MissingDependencyError

logger = logging.getLogger("ntonnx")

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

    def first(self, n: int) -> ArrayDataset:
        """The first ``n`` samples (or all, if fewer) in memory, e.g. to verify a written model."""
        stream = self.batches(n)
        try:
            first = next(stream)
        finally:
            stream.close()
        count = len(next(iter(first.values())))
        return ArrayDataset(
            inputs={name: np.array(array) for name, array in first.items()},
            labels=self.labels[:count],
            groups=None if self.groups is None else self.groups[:count],
            source=self.source,
            class_names=self.class_names,
            group_names=self.group_names,
        )


@dataclass
class ArrayDataset(Dataset):
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


def first_non_finite_row(values: np.ndarray) -> int | None:
    """The first row of ``values`` holding a NaN or Inf, or None.

    Checked ~16 MB at a time: a mask of the whole array would cost a quarter of its size, and is slower.
    """
    if values.dtype.kind not in "fc" or not len(values):
        return None
    rows = values.reshape(len(values), -1)
    step = max(1, (1 << 24) // max(rows.shape[1] * rows.itemsize, 1))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        if not np.isfinite(chunk).all():
            return start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
    return None


def check_finite(batch: np.ndarray, where: str, offset: int) -> None:
    """Raise a :class:`DataError` naming the first sample of ``batch`` with a NaN or Inf."""
    row = first_non_finite_row(batch)
    if row is not None:
        raise DataError(f"{where}: sample {offset + row} contains NaN or Inf")


def require_extra(module: str, extra: str, purpose: str):
    """Import an optional dependency lazily, naming the extra that installs it when absent."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package; install it with pip install 'ntonnx[{extra}]'"
        ) from None


def dims(spec: InputSpec) -> str:
    """A model input's shape as text, free dims by name or '?'."""
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in spec.shape) + ")"
