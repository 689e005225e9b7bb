"""Figures of a ``tune`` report, drawn with matplotlib from the JSON report dict alone.

Every function takes the report as ``TuneResult.to_dict()`` returns it or as ``json.load`` reads it
back (dict keys may be ints or strings), so a saved report can be drawn again without the model.
matplotlib is an optional extra (``pip install 'ntonnx[report]'``), imported on first use; figures
are ``matplotlib.figure.Figure`` objects on the Agg canvas, never pyplot's global state, so drawing
is safe from any thread and needs no display.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ntonnx.errors import MissingDependencyError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Per-class bars are drawn up to this many classes; above, the per-class changes are sorted.
MAX_CLASS_BARS = 30
_BEFORE, _AFTER, _MARK = "#9e9e9e", "#1f77b4", "#d62728"


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` naming the ``[report]`` extra when matplotlib is absent."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "matplotlib is not installed; the HTML report and --plot need it: pip install 'ntonnx[report]'"
        ) from None


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on the Agg canvas; raises :class:`MissingDependencyError` without matplotlib."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG; no timestamp or software tag, so the same report gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write the figure as PNG atomically (a reader never sees half an image)."""
    from ntonnx.files import write_atomic

    data = png_bytes(figure, dpi)
    write_atomic(path, lambda tmp: tmp.write_bytes(data), option="--plot")


def main_figure(report: Mapping[str, Any]) -> Figure:
    """The one image for ``tune --plot``: accuracies before/after, and the ``delta`` curves if any.

    Left: accuracy per group when the evaluation data has groups, else per class (or, for many
    classes, the overall and worst-class accuracy). Right: the sorted spuriousness scores of the
    classes with most mistakes, the threshold, and the neurons the method suppressed.
    """
    curves = (report.get("delta") or {}).get("curves") or []
    figure = new_figure(11 if curves else 6.5, 4.2)
    axes = figure.subplots(1, 2 if curves else 1, squeeze=False)[0]
    by = "group" if report["after"].get("per_group") is not None else "class"
    _accuracy_bars(axes[0], report, by)
    if curves:
        _delta_curves(axes[1], report)
    figure.suptitle(_title(report), fontsize=10)
    return figure


def accuracy_figure(report: Mapping[str, Any], by: str) -> Figure | None:
    """Before/after accuracy bars per ``by`` ("group" or "class"); None when there are no groups."""
    if by == "group" and report["after"].get("per_group") is None:
        return None
    n = len(report["after"]["per_class"]) if by == "class" else len(report["after"]["per_group"])
    figure = new_figure(max(6.0, min(14.0, 2.0 + 0.45 * n)), 3.8)
    _accuracy_bars(figure.subplots(), report, by)
    return figure


def delta_figure(report: Mapping[str, Any]) -> Figure | None:
    """The sorted ``delta`` curves with threshold and selected neurons; None without scores."""
    if not (report.get("delta") or {}).get("curves"):
        return None
    figure = new_figure(7.5, 4.0)
    _delta_curves(figure.subplots(), report)
    return figure


def head_change_figure(report: Mapping[str, Any]) -> Figure | None:
    """Each neuron's weight-column norm before vs after; suppressed neurons in red. None without it."""
    change = report.get("head_change") or {}
    if "column_norms_after" not in change:
        return None
    before, after = change["column_norms_before"], change["column_norms_after"]
    suppressed = set(report.get("suppressed") or [])
    figure = new_figure(7.5, 3.6)
    ax = figure.subplots()
    x = range(len(before))
    ax.bar(x, before, width=1.0, color=_BEFORE, label="original head")
    ax.plot(x, after, ".", color=_AFTER, markersize=4, label="tuned head")
    if suppressed:
        marked = sorted(suppressed)
        ax.plot(marked, [after[i] for i in marked], "x", color=_MARK, markersize=6, label="suppressed (zeroed)")
    ax.set_xlabel("embedding neuron")
    ax.set_ylabel("weight column norm")
    ax.set_title(f"head weights moved by {100 * (change['relative_change'] or 0):.1f}% (relative Frobenius norm)")
    ax.legend(fontsize=8)
    return figure


def auto_figure(report: Mapping[str, Any]) -> Figure | None:
    """``auto``'s candidates by score, the chosen one in red; None when ``auto`` did not run."""
    auto = report.get("auto")
    if not auto:
        return None
    candidates = auto["candidates"]
    figure = new_figure(7.5, max(3.0, 0.22 * len(candidates) + 1.0))
    ax = figure.subplots()
    names = [c["name"] for c in candidates][::-1]
    scores = [c["score"] or 0.0 for c in candidates][::-1]
    colours = [_MARK if name == auto["selected"] else _AFTER for name in names]
    ax.barh(range(len(names)), [100 * s for s in scores], color=colours)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("worst pseudo-group accuracy on the identification set (%)")
    ax.set_title(f"auto chose {auto['selected']}", fontsize=9)
    return figure


def confusion_figure(report: Mapping[str, Any]) -> Figure | None:
    """Confusion matrices before and after, row-normalised, with counts; None above 50 classes."""
    confusion = report.get("confusion") or {}
    if "before" not in confusion:
        return None
    import numpy as np

    n = confusion["n_classes"]
    names = class_labels(report, n)
    size = min(12.0, 3.0 + 0.25 * n)
    figure = new_figure(2 * size + 0.8, size)
    axes = figure.subplots(1, 2)
    for ax, key in zip(axes, ("before", "after"), strict=True):
        counts = np.asarray(confusion[key], dtype=np.float64)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    colour = "white" if rates[i, j] > 0.6 else "black"
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", color=colour, fontsize=8)
        if n <= 20:
            ax.set_xticks(range(n), names, rotation=90 if n > 4 else 0, fontsize=8)
            ax.set_yticks(range(n), names, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{key} (row-normalised)")
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure


def class_labels(report: Mapping[str, Any], n: int) -> list[str]:
    """A display name for each class index: the data's names, else the model's, else the index."""
    names = report.get("class_names")
    if not names and report.get("classes"):
        names = [name for name, _ in sorted(report["classes"].items(), key=lambda item: item[1])]
    if not names:
        names = report.get("model_class_names")
    names = list(names or [])
    return [names[i] if i < len(names) else str(i) for i in range(n)]


def group_label(report: Mapping[str, Any], group: int) -> str:
    """The group's name as the data gave it, else ``group <id>``."""
    names = report.get("group_names") or []
    return str(names[group]) if group < len(names) else f"group {group}"


def by_index(values: Mapping) -> list[tuple[int, Any]]:
    """``{0: a, "1": b}`` (int keys from the library, str keys from JSON) as sorted ``[(0, a), (1, b)]``."""
    return sorted((int(k), v) for k, v in values.items())


def _accuracy_bars(ax, report: Mapping[str, Any], by: str) -> None:
    before, after = report["before"], report["after"]
    if by == "group":
        keys = [g for g, _ in by_index(after["per_group"])]
        sizes = dict(by_index(after.get("group_sizes") or {}))
        labels = [f"{group_label(report, g)}\n(n={sizes[g]})" if g in sizes else group_label(report, g) for g in keys]
        old, new = dict(by_index(before["per_group"])), dict(by_index(after["per_group"]))
        title = f"per group: worst {100 * before['worst_group']:.1f}% -> {100 * after['worst_group']:.1f}%"
    elif len(after["per_class"]) <= MAX_CLASS_BARS:
        keys = [y for y, _ in by_index(after["per_class"])]
        names = class_labels(report, max(keys) + 1)
        labels = [names[y] for y in keys]
        old, new = dict(by_index(before["per_class"])), dict(by_index(after["per_class"]))
        title = f"per class: worst {100 * before['worst_class']:.1f}% -> {100 * after['worst_class']:.1f}%"
    else:
        _class_changes(ax, report)
        return
    x = list(range(len(keys)))
    ax.bar([i - 0.2 for i in x], [100 * old.get(k, 0.0) for k in keys], 0.4, color=_BEFORE, label="original")
    ax.bar([i + 0.2 for i in x], [100 * new[k] for k in keys], 0.4, color=_AFTER, label="tuned")
    for i, k in enumerate(keys):
        ax.text(i + 0.2, 100 * new[k] + 1, f"{100 * new[k]:.1f}", ha="center", fontsize=7)
    ax.set_xticks(x, labels, fontsize=8, rotation=0 if len(keys) <= 6 else 60)
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", ncol=2)


def _class_changes(ax, report: Mapping[str, Any]) -> None:
    """Many classes: each class's accuracy change, sorted, with the overall numbers in the title."""
    before, after = dict(by_index(report["before"]["per_class"])), dict(by_index(report["after"]["per_class"]))
    changes = sorted(100 * (after[y] - before.get(y, 0.0)) for y in after)
    ax.plot(range(len(changes)), changes, color=_AFTER)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"class, sorted by change ({len(changes)} classes)")
    ax.set_ylabel("accuracy change (points)")
    b, a = report["before"], report["after"]
    ax.set_title(
        f"accuracy {100 * b['accuracy']:.1f}% -> {100 * a['accuracy']:.1f}%, "
        f"worst class {100 * b['worst_class']:.1f}% -> {100 * a['worst_class']:.1f}%",
        fontsize=9,
    )


def _delta_curves(ax, report: Mapping[str, Any]) -> None:
    delta = report["delta"]
    for index, curve in enumerate(delta["curves"]):
        colour = f"C{index % 10}"
        ax.plot(
            curve["ranks"], curve["values"], color=colour, label=f"class {curve['name']} ({curve['n_wrong']} wrong)"
        )
        if curve["selected_ranks"]:
            ax.plot(curve["selected_ranks"], curve["selected_values"], "x", color=_MARK, markersize=5)
    if any(curve["selected_ranks"] for curve in delta["curves"]):
        ax.plot([], [], "x", color=_MARK, label=f"suppressed ({delta['n_selected']})")
    ax.axhline(
        delta["threshold"], color="black", linestyle="--", linewidth=0.9, label=f"threshold {delta['threshold']:g}"
    )
    ax.set_xlabel(f"neuron rank within the class (of {delta['dim']})")
    ax.set_ylabel("delta = median(wrong) - median(right)")
    ax.set_title(
        f"spuriousness scores: rule '{delta['rule']}' selects {delta['n_selected']} "
        f"(above in all classes {delta['n_above_all']}, in any {delta['n_above_any']})",
        fontsize=9,
    )
    ax.legend(fontsize=7)


def _title(report: Mapping[str, Any]) -> str:
    method = report["options"]["method"] + (f" -> {report['selected']}" if report.get("selected") else "")
    return (
        f"{os.path.basename(report['model'])}: {method}, {report['n_suppressed']} of {report['head']['dim']} neurons "
        f"suppressed, evaluated on {os.path.basename(str(report['evaluated_on']))} (n={report['after']['n_samples']})"
    )
