"""The parts of the JSON report a reader needs to see what ``tune`` did, built from arrays.

``TuneResult.to_dict()`` holds the accuracies; a person judging a re-fit also wants the confusion
matrices, the spuriousness scores the neurons were chosen by, how the head's weights moved, the
candidates ``auto`` compared and the names of classes and groups. This module turns the arrays
``tune`` has in hand into those JSON fields. It is pure NumPy and never reads a file, so the same
fields come out of the library, a saved report, or a test.

Every field is bounded whatever the model: a report for 1000 classes and a 4096-wide embedding
stays well under a megabyte. Confusion matrices are kept whole up to :data:`MAX_MATRIX_CLASSES`
classes (above that, the largest confusions); ``delta`` curves are kept for at most
:data:`MAX_CURVES` classes and sampled at :data:`CURVE_POINTS` ranks; per-neuron weight norms are
kept up to :data:`MAX_NEURONS` neurons. Floats are rounded to 6 significant digits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Confusion matrices are stored whole up to this many classes.
MAX_MATRIX_CLASSES = 50
#: Above that, the largest off-diagonal cells are listed instead.
TOP_CONFUSIONS = 20
#: Sorted ``delta`` curves are stored for at most this many classes (those with most mistakes).
MAX_CURVES = 8
#: Each curve is sampled at up to this many ranks; selected neurons marked up to this many.
CURVE_POINTS = 200
#: Per-neuron weight-column norms are stored up to this embedding width.
MAX_NEURONS = 4096
#: What ``auto`` ranks its candidates by (see :mod:`ntonnx.selection`).
AUTO_CRITERION = (
    "worst accuracy over the pseudo-groups of the identification set (per class, the samples most "
    "aligned with its delta direction, as many as the original model's mistakes, vs. the rest); "
    "ties go to the higher identification accuracy, then to the earlier candidate"
)


def report_fields(
    *,
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    n_classes: int,
    class_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
    model_class_names: Sequence[str] | None = None,
    delta: np.ndarray | None = None,
    n_wrong: np.ndarray | None = None,
    n_right: np.ndarray | None = None,
    suppressed: Sequence[int] | np.ndarray = (),
    rule: str = "all",
    threshold: float = 0.0,
    original: tuple[np.ndarray, np.ndarray] | None = None,
    tuned: tuple[np.ndarray, np.ndarray] | None = None,
    candidates: Mapping[str, float] | None = None,
    selected: str | None = None,
    kept_classes: Sequence[int] = (),
    model_sha256: str | None = None,
    data_sha256: Mapping[str, str] | None = None,
) -> dict:
    """The report's extra fields, ready for ``json.dumps``.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), true classes of the evaluation set.
    before, after : ndarray of shape (n_samples,), predictions of the original and tuned heads.
    n_classes : the model's classes (2 for a single-logit binary head).
    class_names : name of each class index used in the data, or None (labels were integers).
    group_names : name of each group id, or None (groups were integers).
    model_class_names : the class names the graph itself carries (ZipMap labels, metadata), or None.
    delta : ndarray of shape (n_classes, dim), the spuriousness scores (NaN rows: unscored), or None.
    n_wrong, n_right : ndarray of shape (n_classes,), mistakes and successes per class behind ``delta``.
    suppressed : indices of the neurons whose weight columns were zeroed.
    rule, threshold : how ``suppressed`` was selected from ``delta``.
    original, tuned : ``(W, b)`` before and after, W of shape (n_logits, dim); None for ``erm``.
    candidates : ``auto``'s candidate name -> its score (:attr:`SelectedFit.validation`).
    selected : the candidate ``auto`` chose.
    kept_classes : classes without tuning samples, whose head rows were kept as they were.
    model_sha256, data_sha256 : digests of the model file and of each data file read.

    Returns
    -------
    dict with keys ``class_names``, ``group_names``, ``model_class_names``, ``confusion``,
    ``delta``, ``head_change``, ``auto``, ``kept_classes``, ``provenance`` and ``notes`` (one-line remarks).
    """
    notes: list[str] = []
    delta_part = None
    if delta is not None:
        delta_part = delta_fields(delta, n_wrong, n_right, suppressed, rule, threshold, class_names)
        notes += delta_part.pop("notes")
    if len(kept_classes):
        shown = ", ".join(str(int(c)) for c in kept_classes[:5]) + (", ..." if len(kept_classes) > 5 else "")
        notes.append(
            f"the tuning data has no samples of {len(kept_classes)} of {max(int(n_classes), 2)} classes ({shown}): "
            "their head rows were kept as they were"
        )
    return {
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "group_names": None if group_names is None else [str(g) for g in group_names],
        "model_class_names": None if model_class_names is None else [str(c) for c in model_class_names],
        "confusion": confusion_fields(labels, before, after, n_classes),
        "delta": delta_part,
        "head_change": None if original is None or tuned is None else head_change_fields(original, tuned, suppressed),
        "auto": None if candidates is None else auto_fields(candidates, selected),
        "kept_classes": [int(c) for c in kept_classes],
        "provenance": {"model_sha256": model_sha256, "data_sha256": dict(data_sha256 or {})},
        "notes": notes,
    }


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of shape (n_classes, n_classes): row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    flat = np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def confusion_fields(labels: np.ndarray, before: np.ndarray, after: np.ndarray, n_classes: int) -> dict:
    """Whole confusion matrices up to :data:`MAX_MATRIX_CLASSES` classes, else the largest confusions."""
    n_classes = max(int(n_classes), 2)
    matrices = {
        "before": confusion_matrix(labels, before, n_classes),
        "after": confusion_matrix(labels, after, n_classes),
    }
    if n_classes <= MAX_MATRIX_CLASSES:
        return {"n_classes": n_classes, **{k: m.tolist() for k, m in matrices.items()}}
    return {"n_classes": n_classes, **{f"top_{k}": _top_confusions(m) for k, m in matrices.items()}}


def _top_confusions(matrix: np.ndarray) -> list[list[int]]:
    """``[true, predicted, count]`` of the largest off-diagonal cells, largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    order = np.argsort(-flat, kind="stable")[:TOP_CONFUSIONS]
    n = matrix.shape[0]
    return [[int(i // n), int(i % n), int(flat[i])] for i in order if flat[i] > 0]


def delta_fields(
    delta: np.ndarray,
    n_wrong: np.ndarray | None,
    n_right: np.ndarray | None,
    suppressed: Sequence[int] | np.ndarray,
    rule: str,
    threshold: float,
    class_names: Sequence[str] | None = None,
) -> dict:
    """What the spuriousness scores looked like and how the selection read them.

    Parameters
    ----------
    delta : ndarray of shape (n_classes, dim); rows of classes without a score are NaN.
    n_wrong, n_right : ndarray of shape (n_classes,), or None.
    suppressed : indices of the selected neurons.

    Returns
    -------
    dict: ``rule``, ``threshold``, ``dim``, ``scored_classes``/``unscored_classes`` (counts and the
    first indices), ``n_above`` (per scored class, neurons with ``delta > threshold``),
    ``n_above_all``/``n_above_any`` (neurons above it in every/some scored class), ``curves`` (the
    sorted curve of up to :data:`MAX_CURVES` classes, with the selected neurons' ranks) and
    ``notes`` (one-line remarks, e.g. classes left out of the ``all`` rule).
    """
    delta = np.asarray(delta, dtype=np.float64)
    n_classes, dim = delta.shape
    scored = np.flatnonzero(~np.isnan(delta).all(axis=1))
    unscored = np.flatnonzero(np.isnan(delta).all(axis=1))
    chosen = np.asarray(suppressed, dtype=np.int64)
    above = delta[scored] > threshold
    wrong = np.zeros(n_classes, dtype=np.int64) if n_wrong is None else np.asarray(n_wrong)
    right = np.zeros(n_classes, dtype=np.int64) if n_right is None else np.asarray(n_right)
    # The classes with most mistakes are the ones whose scores say most; plot those.
    shown = scored[np.argsort(-wrong[scored], kind="stable")][:MAX_CURVES]
    notes = []
    # Classes with identification samples but no score block the 'all' rule (see ntonnx.method.neurons).
    blocking = unscored[(wrong[unscored] + right[unscored]) > 0]
    if blocking.size:
        why = _why_unscored(blocking, wrong, right, class_names)
        if scored.size == 0:
            notes.append(f"no class has both mistakes and successes ({why}): no neuron can be scored or selected")
        elif rule == "all":
            notes.append(
                f"rule 'all': {blocking.size} of {n_classes} classes give no score ({why}), so no neuron is above "
                f"the threshold for every class and none was selected; --rule any uses the {scored.size} scored classes"
            )
        else:
            notes.append(
                f"{blocking.size} of {n_classes} classes give no score ({why}); rule '{rule}' used the "
                f"{scored.size} scored classes"
            )
    return {
        "rule": rule,
        "threshold": float(threshold),
        "dim": int(dim),
        "n_scored_classes": int(scored.size),
        "scored_classes": _first(scored),
        "n_unscored_classes": int(unscored.size),
        "unscored_classes": _first(unscored),
        "n_above": {str(int(y)): int(n) for y, n in zip(scored, above.sum(axis=1), strict=True)}
        if scored.size <= 1000
        else None,
        "n_above_all": int(above.all(axis=0).sum()) if scored.size else 0,
        "n_above_any": int(above.any(axis=0).sum()) if scored.size else 0,
        "n_selected": int(chosen.size),
        "curves": [_curve(int(y), delta[y], chosen, wrong[y], right[y], class_names) for y in shown],
        "notes": notes,
    }


def _curve(y: int, row: np.ndarray, chosen: np.ndarray, wrong, right, class_names) -> dict:
    """One class's ``delta`` sorted high to low, sampled at up to :data:`CURVE_POINTS` ranks."""
    order = np.argsort(-row, kind="stable")
    values = row[order]
    ranks = np.unique(np.linspace(0, len(row) - 1, min(CURVE_POINTS, len(row))).round().astype(np.int64))
    rank_of = np.empty(len(row), dtype=np.int64)
    rank_of[order] = np.arange(len(row))
    marked = np.sort(rank_of[chosen]) if chosen.size else np.zeros(0, dtype=np.int64)
    if marked.size > CURVE_POINTS:
        marked = marked[np.unique(np.linspace(0, marked.size - 1, CURVE_POINTS).round().astype(np.int64))]
    return {
        "class": y,
        "name": _name(y, class_names),
        "n_wrong": int(wrong),
        "n_right": int(right),
        "ranks": ranks.tolist(),
        "values": _rounded(values[ranks]),
        "selected_ranks": marked.tolist(),
        "selected_values": _rounded(values[marked]),
        "top": [[int(i), _round(row[i])] for i in order[:10]],
    }


def _why_unscored(unscored: np.ndarray, wrong: np.ndarray, right: np.ndarray, class_names) -> str:
    """'no mistakes: class a, b; no successes: class c' for the first few of each kind."""
    parts = []
    for label, members in (
        ("no mistakes", unscored[wrong[unscored] == 0]),
        ("no correct samples", unscored[(wrong[unscored] > 0) & (right[unscored] == 0)]),
    ):
        if members.size:
            shown = ", ".join(_name(int(y), class_names) for y in members[:5])
            parts.append(f"{label}: {members.size} ({shown}{', ...' if members.size > 5 else ''})")
    return "; ".join(parts)


def head_change_fields(
    original: tuple[np.ndarray, np.ndarray],
    tuned: tuple[np.ndarray, np.ndarray],
    suppressed: Sequence[int] | np.ndarray,
) -> dict:
    """How far the head moved: norms overall, and per neuron (weight column) up to :data:`MAX_NEURONS`.

    Parameters
    ----------
    original, tuned : ``(W, b)`` with W of shape (n_logits, dim) and b of shape (n_logits,).
    """
    W0, b0 = (np.asarray(a, dtype=np.float64) for a in original)
    W1, b1 = (np.asarray(a, dtype=np.float64) for a in tuned)
    change = {
        "weight_norm_before": _round(np.linalg.norm(W0)),
        "weight_norm_after": _round(np.linalg.norm(W1)),
        "relative_change": _round(np.linalg.norm(W1 - W0) / max(np.linalg.norm(W0), 1e-300)),
        "bias_before": _rounded(b0) if b0.size <= MAX_MATRIX_CLASSES else None,
        "bias_after": _rounded(b1) if b1.size <= MAX_MATRIX_CLASSES else None,
        "n_zero_columns": int((np.abs(W1).max(axis=0) == 0).sum()),
        "n_suppressed": len(suppressed),
    }
    if W0.shape[1] <= MAX_NEURONS:
        change["column_norms_before"] = _rounded(np.linalg.norm(W0, axis=0))
        change["column_norms_after"] = _rounded(np.linalg.norm(W1, axis=0))
    return change


def auto_fields(candidates: Mapping[str, float], selected: str | None) -> dict:
    """``auto``'s candidates with their scores, best first, and the criterion that ranked them."""
    ranked = sorted(candidates.items(), key=lambda item: -item[1])
    return {
        "criterion": AUTO_CRITERION,
        "selected": selected,
        "candidates": [{"name": name, "score": _round(score)} for name, score in ranked],
    }


def _name(index: int, names: Sequence[str] | None) -> str:
    return str(names[index]) if names is not None and index < len(names) else str(index)


def _first(indices: np.ndarray, count: int = 20) -> list[int]:
    return [int(i) for i in indices[:count]]


def _round(value: float) -> float | None:
    """6 significant digits; None for NaN/Inf (JSON has no such numbers)."""
    value = float(value)
    return float(f"{value:.6g}") if np.isfinite(value) else None


def _rounded(values: np.ndarray) -> list[float | None]:
    return [_round(v) for v in np.asarray(values, dtype=np.float64).ravel()]
