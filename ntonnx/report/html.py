"""One self-contained HTML page from a ``tune`` JSON report: open it anywhere, offline.

Figures are PNGs embedded as base64 ``data:`` URIs and the style sheet is inline, so the page
loads nothing: no scripts, fonts or style sheets from the network (it can be mailed or archived
as one file). Every number shown comes from the report dict; accuracy cells carry the exact value
in ``data-value`` and its JSON path in ``data-key``, so a test (or a reader) can check the page
against the JSON it was made from.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from html import escape
from typing import Any

from ntonnx.report.figures import (
    accuracy_figure,
    auto_figure,
    by_index,
    class_labels,
    confusion_figure,
    delta_figure,
    group_label,
    head_change_figure,
    main_figure,
    png_bytes,
)

#: Up to this many classes the class table lists them all; above, the worst ones after tuning.
MAX_CLASS_ROWS = 50
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; text-align: left; } img { max-width: 100%; } .note { color: #8a4b00; }
code { background: #f4f4f4; padding: 0 3px; } .chosen { font-weight: bold; color: #d62728; }
"""


def render_html(report: Mapping[str, Any]) -> str:
    """The report page as a string (UTF-8 HTML5)."""
    title = f"ntonnx report: {os.path.basename(str(report['model']))}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _summary(report),
        _image(main_figure(report), "main figure: accuracies before and after, spuriousness scores"),
        _accuracy_section(report),
        _delta_section(report),
        _method_section(report),
        _confusion_section(report),
        _provenance_section(report),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_html(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Render ``report`` and write it atomically to ``path``."""
    from ntonnx.files import write_atomic

    page = render_html(report)
    write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"), option="--report-html")


def _summary(report: Mapping[str, Any]) -> str:
    options = report["options"]
    method = escape(options["method"])
    if report.get("selected"):
        method += f" (auto chose <code>{escape(report['selected'])}</code>)"
    verification = report.get("verification") or {}
    rows = [
        ("model", f"<code>{escape(str(report['model']))}</code>"),
        ("written to", f"<code>{escape(str(report['out']))}</code>"),
        ("method", method),
        ("neurons suppressed", f"{report['n_suppressed']} of {report['head']['dim']}"),
        ("classes", str(max(report["head"]["n_classes"], 2))),
        ("identification / tuning samples", f"{report['n_identification']} / {report['n_tuning']}"),
        ("evaluated on", f"<code>{escape(str(report['evaluated_on']))}</code> (n={report['after']['n_samples']})"),
        ("verification", escape(_verification(verification))),
    ]
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in report.get("notes") or [])
    return _table(["", ""], rows, show_header=False) + notes


def _verification(verification: Mapping[str, Any]) -> str:
    if "max_error" in verification:
        return f"logits match embedding @ W.T + b to {verification['max_error']:.1e}"
    return json.dumps(verification)


def _accuracy_section(report: Mapping[str, Any]) -> str:
    before, after = report["before"], report["after"]
    rows = [
        _metric_row("accuracy", "accuracy", before, after),
        _metric_row("worst-class accuracy", "worst_class", before, after),
    ]
    if after.get("worst_group") is not None:
        rows.append(_metric_row("worst-group accuracy", "worst_group", before, after))
    html = ["<h2>Accuracy before and after</h2>", _table(["metric", "original (%)", "tuned (%)"], rows)]
    if after.get("per_group") is not None:
        sizes = dict(by_index(after.get("group_sizes") or {}))
        old = dict(by_index(before["per_group"]))
        group_rows = [
            [escape(group_label(report, g)), str(sizes.get(g, "")), *_cells(f"per_group.{g}", old.get(g), value)]
            for g, value in by_index(after["per_group"])
        ]
        html += [
            "<h3>Per group</h3>",
            _table(["group", "n", "original (%)", "tuned (%)"], group_rows),
            _image(accuracy_figure(report, "group"), "accuracy per group"),
        ]
    html.append(_class_table(report))
    if len(after["per_class"]) > 1:
        html.append(_image(accuracy_figure(report, "class"), "accuracy per class"))
    return "\n".join(html)


def _class_table(report: Mapping[str, Any]) -> str:
    before, after = dict(by_index(report["before"]["per_class"])), by_index(report["after"]["per_class"])
    names = class_labels(report, max(y for y, _ in after) + 1)
    shown, caption = after, "<h3>Per class</h3>"
    if len(after) > MAX_CLASS_ROWS:
        shown = sorted(after, key=lambda item: item[1])[:MAX_CLASS_ROWS]
        caption = f"<h3>Per class: the {MAX_CLASS_ROWS} worst after tuning, of {len(after)}</h3>"
    rows = [[str(y), escape(names[y]), *_cells(f"per_class.{y}", before.get(y), value)] for y, value in shown]
    return caption + _table(["index", "class", "original (%)", "tuned (%)"], rows)


def _metric_row(label: str, key: str, before: Mapping, after: Mapping) -> list[str]:
    return [label, *_cells(key, before.get(key), after.get(key))]


def _cells(key: str, old: float | None, new: float | None) -> list[str]:
    return [_number(f"before.{key}", old), _number(f"after.{key}", new)]


def _number(key: str, value: float | None) -> str:
    """A percentage cell carrying the exact value and where it sits in the JSON report."""
    if value is None:
        return '<td class="num">-</td>'
    return f'<td class="num" data-key="{escape(key)}" data-value="{value!r}">{100 * value:.1f}</td>'


def _delta_section(report: Mapping[str, Any]) -> str:
    delta = report.get("delta")
    if not delta:
        reason = "it does not use them" if report["options"]["method"] not in ("neurontune", "auto") else "none given"
        return f"<h2>Spuriousness scores</h2><p>No scores: method {escape(report['options']['method'])}: {reason}.</p>"
    unscored = ""
    if delta["n_unscored_classes"]:
        first = ", ".join(str(y) for y in delta["unscored_classes"])
        more = ", ..." if delta["n_unscored_classes"] > len(delta["unscored_classes"]) else ""
        unscored = f" Classes without a score: {delta['n_unscored_classes']} ({first}{more})."
    text = (
        f"<p>delta<sub>i</sub><sup>y</sup> = median of neuron i on class y's mistakes minus its median on class "
        f"y's successes (identification set). Rule <code>{escape(delta['rule'])}</code>, threshold "
        f"{delta['threshold']:g}: {delta['n_above_all']} neurons are above it in every scored class, "
        f"{delta['n_above_any']} in at least one; {delta['n_selected']} of {delta['dim']} selected. "
        f"{delta['n_scored_classes']} classes scored.{escape(unscored)}</p>"
    )
    curves = [
        [
            escape(c["name"]),
            str(c["n_wrong"]),
            str(c["n_right"]),
            escape(", ".join(f"{i} ({v:g})" for i, v in c["top"][:5])),
        ]
        for c in delta["curves"]
    ]
    return "\n".join([
        "<h2>Spuriousness scores</h2>",
        text,
        _image(delta_figure(report), "sorted spuriousness scores per class"),
        _table(["class", "mistakes", "successes", "highest delta: neuron (delta)"], curves),
    ])  # fmt: skip


def _method_section(report: Mapping[str, Any]) -> str:
    html = ["<h2>What the method did</h2>"]
    suppressed = report.get("suppressed") or []
    if suppressed:
        shown = ", ".join(str(i) for i in suppressed[:100]) + (", ..." if len(suppressed) > 100 else "")
        html.append(f"<p>Suppressed (weight columns set to 0): {len(suppressed)} neurons: {escape(shown)}.</p>")
    else:
        html.append("<p>No neuron was suppressed.</p>")
    change = report.get("head_change")
    if change:
        html.append(
            f"<p>Head weights: norm {change['weight_norm_before']:g} -> {change['weight_norm_after']:g}, "
            f"relative change {100 * (change['relative_change'] or 0):.1f}%.</p>"
        )
        html.append(_image(head_change_figure(report), "weight column norm per neuron"))
    auto = report.get("auto")
    if auto:
        rows = [
            [f'<span class="chosen">{escape(c["name"])}</span>' if c["name"] == auto["selected"] else escape(c["name"]),
             f'<td class="num">{100 * (c["score"] or 0):.1f}</td>']
            for c in auto["candidates"]
        ]  # fmt: skip
        html += [
            f"<p>auto compared {len(rows)} re-fits by {escape(auto['criterion'])}; it chose "
            f"<code>{escape(str(auto['selected']))}</code>.</p>",
            _image(auto_figure(report), "candidates compared by auto"),
            _table(["candidate", "score (%)"], rows),
        ]
    return "\n".join(html)


def _confusion_section(report: Mapping[str, Any]) -> str:
    confusion = report.get("confusion")
    if not confusion:
        return ""
    if "before" in confusion:
        return "<h2>Confusion matrices</h2>" + _image(confusion_figure(report), "confusion matrices")
    names = class_labels(report, confusion["n_classes"])
    html = [f"<h2>Largest confusions ({confusion['n_classes']} classes: matrices omitted)</h2>"]
    for key in ("before", "after"):
        rows = [
            [escape(names[t]), escape(names[p]), f'<td class="num">{n}</td>'] for t, p, n in confusion[f"top_{key}"]
        ]
        html += [
            f"<h3>{'original' if key == 'before' else 'tuned'}</h3>",
            _table(["true", "predicted", "samples"], rows),
        ]
    return "\n".join(html)


def _provenance_section(report: Mapping[str, Any]) -> str:
    provenance = report.get("provenance") or {}
    rows = [
        ("ntonnx version", escape(str(report.get("ntonnx_version")))),
        ("model sha256", f"<code>{escape(str(provenance.get('model_sha256') or '-'))}</code>"),
        *((f"data sha256: {escape(path)}", f"<code>{escape(digest)}</code>")
          for path, digest in (provenance.get("data_sha256") or {}).items()),
        ("execution provider", escape(str(report.get("provider")))),
        ("options", f"<code>{escape(json.dumps(report['options'], sort_keys=True))}</code>"),
        ("head", f"<code>{escape(json.dumps(_head_summary(report['head'])))}</code>"),
        ("timings (s)", escape(json.dumps(report.get("timings_s") or {}))),
    ]  # fmt: skip
    if report.get("classes"):
        rows.append(("class mapping", escape(", ".join(f"{n}={i}" for n, i in report["classes"].items()))))
    if report.get("model_class_names"):
        rows.append(("model's own class names", escape(", ".join(report["model_class_names"][:50]))))
    return "<h2>Provenance</h2>" + _table(["", ""], rows, show_header=False)


def _head_summary(head: Mapping[str, Any]) -> dict:
    return {k: head[k] for k in ("pattern", "nodes", "embedding", "dim", "n_classes", "output") if k in head}


def _table(columns: list[str], rows, show_header: bool = True) -> str:
    """Rows of cells: plain strings become ``<td>``, strings already starting with ``<td`` stay as they are."""
    head = "<tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>" if show_header else ""
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _cell(content: str) -> str:
    return content if content.startswith("<td") else f"<td>{content}</td>"


def _image(figure, alt: str) -> str:
    """The figure as an embedded PNG (nothing when there is no figure)."""
    if figure is None:
        return ""
    data = base64.b64encode(png_bytes(figure)).decode("ascii")
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></p>'


def read_report(path: str | os.PathLike) -> dict:
    """A JSON report written by ``tune --report``, checked to be one (``ntonnx report`` reads it)."""
    from ntonnx.errors import DataError, UsageError

    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except FileNotFoundError:
        raise UsageError(f"report '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"report '{path}' is not a JSON file ({exc})") from None
    missing = [key for key in _REQUIRED if not isinstance(report, dict) or key not in report]
    if missing:
        raise DataError(
            f"report '{path}' is not a tune report (no {', '.join(repr(k) for k in missing)}); "
            "write one with 'ntonnx tune ... --report R.json'"
        )
    return report


_REQUIRED = ("model", "out", "options", "head", "before", "after", "n_suppressed")
