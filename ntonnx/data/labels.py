"""Class labels and group ids given as integers or as names, turned into int64 indices.

Users label data the way their pipeline does: class indices, or class names ("cat", "dog").
Names map through a class list the user gives (in the model's output order) or, failing that,
the sorted unique names; the mapping used is kept so the report can show it. A sorted-name
mapping is only a guess unless every model class is present, so it is refused otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ntonnx.activations import n_label_classes
from ntonnx.errors import DataError


def encode_labels(
    values: Sequence | np.ndarray,
    n_classes: int,
    source: str,
    column: str,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """Class indices of ``values`` and the class names used (None when labels were integers).

    Parameters
    ----------
    values : labels of each sample: integers, or names (strings).
    n_classes : number of the model's classes (1 for a single-logit binary head).
    source, column : where the labels come from, for messages.
    classes : class names in the model's output order; names in ``values`` must be among them.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64 in ``[0, max(n_classes, 2))``.
    names : the class name of each index, or None.
    """
    n_model = n_label_classes(n_classes)
    if classes is not None:
        classes = [str(c) for c in classes]
        duplicates = sorted({c for c in classes if classes.count(c) > 1})
        if duplicates:
            raise DataError(f"class list names {duplicates[0]!r} twice")
        if len(classes) > n_model:
            raise DataError(f"the class list names {len(classes)} classes, the model has {n_model}")
    raw = _as_array(values, source, column)
    named = raw.dtype.kind in "US" and (
        (classes is not None and set(raw.tolist()) <= set(classes)) or not _all_integers(raw)
    )
    if named:
        labels, names = _by_name(raw, classes, n_model, source, column)
    else:
        labels, names = _integers(raw, source, column), classes
    bad = np.flatnonzero((labels < 0) | (labels >= n_model))
    if bad.size:
        raise DataError(
            f"data '{source}': {column} at row {bad[0]} is {labels[bad[0]]}, "
            f"outside the model's classes 0..{n_model - 1}"
        )
    if names is not None:
        counts = np.bincount(labels, minlength=len(names))
        empty = np.flatnonzero(counts[: len(names)] == 0)
        if empty.size:
            raise DataError(f"data '{source}': class {names[empty[0]]!r} (index {empty[0]}) has no samples")
    return labels, names


def encode_groups(values: Sequence | np.ndarray, source: str, column: str) -> tuple[np.ndarray, list[str] | None]:
    """Group ids of ``values`` (integers, or names mapped in sorted order) and the names used."""
    raw = _as_array(values, source, column)
    if raw.dtype.kind in "iuf" or _all_integers(raw):
        return _integers(raw, source, column), None
    names = sorted(set(raw.astype(str).tolist()))
    return np.searchsorted(np.array(names), raw.astype(str)).astype(np.int64), names


def _as_array(values: Sequence | np.ndarray, source: str, column: str) -> np.ndarray:
    raw = np.asarray(values)
    if raw.dtype == object:
        missing = [i for i, v in enumerate(raw.tolist()) if v is None or (isinstance(v, float) and np.isnan(v))]
        if missing:
            raise DataError(f"data '{source}': {column} is empty at row {missing[0]}")
        raw = raw.astype(str)
    if raw.ndim != 1:
        raise DataError(f"data '{source}': {column} must be one value per sample, got shape {raw.shape}")
    if raw.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(raw))
        if bad.size:
            raise DataError(f"data '{source}': {column} is empty or NaN at row {bad[0]}")
    return raw


def _all_integers(raw: np.ndarray) -> bool:
    """True when every string is an integer literal ("3", "-1"), as CSV labels often are."""
    return raw.dtype.kind in "US" and all(s.strip().lstrip("+-").isdigit() for s in raw.astype(str).tolist())


def _integers(raw: np.ndarray, source: str, column: str) -> np.ndarray:
    if raw.dtype.kind in "US":
        return np.array([int(s) for s in raw.astype(str).tolist()], dtype=np.int64)
    if raw.dtype.kind == "f":
        fractional = np.flatnonzero(raw != np.round(raw))
        if fractional.size:
            raise DataError(
                f"data '{source}': {column} at row {fractional[0]} is {raw[fractional[0]]}, not a class index"
            )
    return raw.astype(np.int64)


def _by_name(
    raw: np.ndarray, classes: list[str] | None, n_model: int, source: str, column: str
) -> tuple[np.ndarray, list[str]]:
    if classes is None:
        names = sorted(set(raw.tolist()))
        if len(names) != n_model:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise DataError(
                f"data '{source}': {column} holds {len(names)} class names ({shown}) for a model with "
                f"{n_model} classes; pass --classes listing the model's classes in output order"
            )
    else:
        names = classes
    index = {name: i for i, name in enumerate(names)}
    labels = np.empty(len(raw), dtype=np.int64)
    for row, name in enumerate(raw.tolist()):
        if name not in index:
            raise DataError(f"data '{source}': {column} at row {row} is {name!r}, not one of the classes {names}")
        labels[row] = index[name]
    return labels, names
