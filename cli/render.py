"""Human-readable text for the CLI: the metrics table and the inspect summary.

JSON output is the library's ``to_dict()`` as it is; this module only formats for people.
"""

from __future__ import annotations

from ntonnx.api import ModelInfo
from ntonnx.graph.heads.pooling import Pooling
from ntonnx.method.metrics import Metrics


def table(rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, two spaces between."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def metrics_table(columns: dict[str, Metrics]) -> str:
    """Accuracy, worst class, each class, worst group and each group; one column per model."""
    names = list(columns)
    first = columns[names[0]]
    rows = [["metric", *names]]

    def add(label: str, values: list[float | None]) -> None:
        rows.append([label, *("-" if v is None else f"{100 * v:.1f}" for v in values)])

    add("accuracy", [m.accuracy for m in columns.values()])
    add("worst-class accuracy", [m.worst_class for m in columns.values()])
    for y in first.per_class:
        add(f"  class {y}", [m.per_class.get(y) for m in columns.values()])
    if first.per_group is not None:
        add("worst-group accuracy", [m.worst_group for m in columns.values()])
        for g, size in first.group_sizes.items():
            add(f"  group {g} (n={size})", [m.per_group.get(g) for m in columns.values()])
    return table(rows) + f"\n(accuracies in %, n = {first.n_samples} samples)"


def model_summary(info: ModelInfo) -> str:
    """What ``ntonnx inspect`` prints."""
    opsets = ", ".join(f"{domain} {version}" for domain, version in info.opsets.items())
    lines = [f"model     {info.path}", f"producer  {info.producer or '-'}  (IR {info.ir_version}; opset {opsets})"]
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            shape = ", ".join("?" if d is None else str(d) for d in t.shape)
            lines.append(f"{kind:<9} {t.name}: {t.dtype} [{shape}]")
    head = info.head
    if head is None:
        lines.append("head      not found (see the error below)")
        return "\n".join(lines)
    layout = head.weight.layout + ("" if head.weight.scale == 1 else f", alpha={head.weight.scale:g}")
    via = f" via {' -> '.join(head.weight.via)}" if head.weight.via else ""
    pooled = f", pooled: {_pooling(head.pooling)}" if head.pooling else ""
    lines += [
        f"head      {' -> '.join(head.nodes)}  (pattern {head.pattern}; weight '{head.weight.tensor}'{via} {layout}; "
        f"bias {repr(head.bias.tensor) if head.bias else 'none'}; dtype {head.dtype})",
        f"embedding {head.embedding} (width {head.dim}{pooled})",
        f"classes   {head.n_classes}{' (single logit, binary)' if head.n_classes == 1 else ''}",
        f"post-op   {' -> '.join([*(f'{op} (in the head node)' for op in head.inner_post_ops), *head.post_ops])}"
        f"{'' if head.inner_post_ops or head.post_ops else 'none'} -> output '{head.output}'",
    ]
    return "\n".join(lines)


def _pooling(pooling: Pooling) -> str:
    if pooling.kind == "take":
        return f"position {pooling.index} of axis {pooling.axes[0]}"
    if pooling.kind == "spatial_mean":
        return "mean over spatial axes"
    return f"mean over axes {list(pooling.axes)}"
