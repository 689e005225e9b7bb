"""Finding the head of a classifier graph.

The patterns are a registry (one small module each, tried in order). Location walks back from a
graph output through post-ops that keep the winning class (Softmax, Sigmoid, Cast, ZipMap, ...;
:mod:`ntonnx.graph.heads.postops`), then through a per-position pooling the head commutes with (CLS
``Gather``, ``ReduceMean``, global average pool; :mod:`ntonnx.graph.heads.pooling`), to the node that
produces the logits, and asks each pattern whether it matches. Users override with a node name or
the embedding tensor when the graph is unusual; every failure names the candidates it saw.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from ntonnx.errors import ModelError, UsageError
from ntonnx.graph.heads.base import HeadPattern, HeadSpec
from ntonnx.graph.heads.conv import conv1x1
from ntonnx.graph.heads.gemm import gemm
from ntonnx.graph.heads.linear_classifier import linear_classifier
from ntonnx.graph.heads.matmul import matmul, matmul_add
from ntonnx.graph.heads.matmul_integer import matmul_integer
from ntonnx.graph.heads.params import trace
from ntonnx.graph.heads.pooling import conv_compatible, match_pooling
from ntonnx.graph.heads.postops import BINARY_PAIRS, POSITIVE_COLUMN, POST_OPS, QDQ, step_back, steps_forward
from ntonnx.graph.index import GraphIndex, node_label

#: Tried in this order on the node that produces the logits.
PATTERNS: list[HeadPattern] = [gemm, matmul_add, matmul_integer, matmul, conv1x1, linear_classifier]
_BY_NAME = {pattern.name: pattern for pattern in PATTERNS}
#: Op types that can be the linear node of a head (for candidate lists and --embedding).
_LINEAR_OPS = ("Gemm", "MatMul", "Conv", "MatMulInteger", "LinearClassifier")
#: How many nodes forward of a --head-node a multi-node pattern may end (MatMulInteger -> Add).
_MAX_PATTERN_NODES = 4


def locate_head(
    model: onnx.ModelProto,
    *,
    output: str | None = None,
    head_node: str | None = None,
    embedding: str | None = None,
) -> HeadSpec:
    """Find the classifier head of ``model``.

    Parameters
    ----------
    output : graph output to follow (required only when several outputs end in different heads).
    head_node : name of a node of the head (or of the tensor it produces), skipping detection.
    embedding : name of the head's input tensor, skipping detection.
    """
    index = GraphIndex(model)
    if output is not None and output not in index.graph_outputs:
        raise UsageError(f"--output '{output}' is not a graph output (outputs: {index.graph_outputs})")
    if head_node is not None:
        spec = _head_from_node(index, head_node)
    elif embedding is not None:
        spec = _head_from_embedding(index, embedding)
    else:
        return _detect(index, output)
    return _attach_output(index, spec, output)


def read_head(model: onnx.ModelProto, spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
    """The head's effective ``W`` of shape ``(n_classes, dim)`` and ``b`` of shape ``(n_classes,)``."""
    return _BY_NAME[spec.pattern].read(model, spec)


def write_head(model: onnx.ModelProto, spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> None:
    """Make ``model``'s head compute ``pool(embedding) @ W.T + b``; edits ``model`` in place."""
    _BY_NAME[spec.pattern].write(model, spec, W, b)


def _detect(index: GraphIndex, output: str | None) -> HeadSpec:
    outputs = [output] if output else index.graph_outputs
    found: list[HeadSpec] = []
    reached: list[str] = []
    for name in outputs:
        node, post_ops, tensor = _walk_back(index, name)
        if node is None:
            reached.append(f"'{name}' <- graph input or constant")
            continue
        spec = _match_pooled(index, node)
        if spec is not None and (spec.logits != tensor or not _keeps_winner([*spec.inner_post_ops, *post_ops])):
            spec = None  # reached through another output of the node (a label), or a column pick of non-pair scores
        if spec is None:
            reached.append(f"'{name}' <- {node.op_type} node '{node_label(node)}'{_why_not(index, node)}")
            continue
        found.append(dataclasses.replace(spec, output=name, post_ops=post_ops))
    heads = {spec.weight.consumer for spec in found}
    if len(heads) == 1:
        return min(found, key=lambda spec: len(spec.post_ops))
    if not found:
        raise ModelError(
            f"no linear head (Gemm, MatMul[+Add], 1x1 Conv with constant weights, LinearClassifier) produces "
            f"{' or '.join(reached)}; candidates: {_candidates(index)}; "
            "pass --head-node NAME or --embedding TENSOR"
        )
    raise ModelError(
        f"several outputs end in different heads ({', '.join(f'{s.output} <- {s.nodes[-1]}' for s in found)}); "
        "pass --output NAME to choose one (or --head-node NAME / --embedding TENSOR)"
    )


def _walk_back(index: GraphIndex, tensor: str) -> tuple[onnx.NodeProto | None, list[str], str]:
    """The node behind ``tensor``'s post-ops, the post-ops, and the tensor of the node they start from."""
    post_ops: list[str] = []
    node = index.producer(tensor)
    while node is not None:
        step = step_back(index, node)
        if step is None:
            break
        post_ops.insert(0, step[0])
        tensor = step[1]
        node = index.producer(tensor)
    return node, post_ops, tensor


def _keeps_winner(ops: list[str]) -> bool:
    """Picking column 1 keeps the winner only of a binary pair (``[-z, z]``, ``[1 - p, p]``)."""
    return all(op != POSITIVE_COLUMN or (i and ops[i - 1] in BINARY_PAIRS) for i, op in enumerate(ops))


def _match(index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
    for pattern in PATTERNS:
        spec = pattern.match(index, node)
        if spec is not None:
            return spec
    return None


def _match_pooled(index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
    """The head whose logits ``node`` produces: the node itself, or a pooling of a head's output."""
    spec = _match(index, node)
    if spec is not None:
        return spec
    if match_pooling(index, node) is None or index.producer(node.input[0]) is None:
        return None
    spec = _match(index, index.producer(node.input[0]))
    return None if spec is None else _absorb_pooling(index, spec, node)


def _absorb_pooling(index: GraphIndex, spec: HeadSpec, node: onnx.NodeProto) -> HeadSpec | None:
    """``spec`` extended by pooling ``node`` when the head commutes with it, else None."""
    pooling = match_pooling(index, node)
    if pooling is None or node.input[0] != spec.logits or len(index.consumers[spec.logits]) != 1:
        return None
    if spec.pattern == "conv1x1":
        rank = index.constant(spec.weight.tensor).ndim
        if not conv_compatible(pooling, rank):
            return None
        pooling = spec.pooling
    elif spec.pattern == "gemm" or pooling.kind == "spatial_mean" or -1 in pooling.axes:
        return None  # Gemm is rank 2 and the last axis of a MatMul is the class axis
    return dataclasses.replace(
        spec, nodes=[*spec.nodes, node_label(node)], logits=node.output[0], output=node.output[0], pooling=pooling
    )


def _head_from_node(index: GraphIndex, name: str) -> HeadSpec:
    node = index.node_by_name(name)
    if node is None:
        raise UsageError(f"--head-node '{name}' names no node in the graph (candidates: {_candidates(index)})")
    label = node_label(node)
    # The named node may be the first of a multi-node head (MatMul then Add): prefer the longest match.
    best, frontier = None, [node]
    for _ in range(_MAX_PATTERN_NODES):
        for candidate in frontier:
            spec = _match(index, candidate)
            if spec is not None and label in spec.nodes and (best is None or len(spec.nodes) > len(best.nodes)):
                best = spec
        frontier = [c for n in frontier for out in n.output if out for c in index.consumers.get(out, [])]
    if best is None:
        raise ModelError(
            f"--head-node '{name}' is a {node.op_type} node, not a linear head with constant weights"
            f"{_why_not(index, node)} (candidates: {_candidates(index)})"
        )
    return best


def _head_from_embedding(index: GraphIndex, tensor: str) -> HeadSpec:
    if tensor not in index.consumers:
        raise UsageError(f"--embedding '{tensor}' is not a tensor any node reads (candidates: {_candidates(index)})")
    readers = list(index.consumers[tensor])
    readers += [c for n in readers if n.op_type == "DynamicQuantizeLinear" for c in index.consumers[n.output[0]]]
    specs = {}
    for node in readers:
        if node.op_type in _LINEAR_OPS:
            try:
                spec = _head_from_node(index, node.name or node.output[0])
            except (ModelError, UsageError):
                continue
            specs[spec.weight.consumer] = spec
    if len(specs) == 1:
        return next(iter(specs.values()))
    if not specs:
        raise UsageError(
            f"--embedding '{tensor}' feeds no Gemm, MatMul or 1x1 Conv with constant weights "
            f"(candidates: {_candidates(index)})"
        )
    raise UsageError(
        f"--embedding '{tensor}' feeds several linear heads ({', '.join(s.nodes[0] for s in specs.values())}); "
        "pass --head-node NAME instead"
    )


def _attach_output(index: GraphIndex, spec: HeadSpec, output: str | None) -> HeadSpec:
    """Follow the head's logits forward through a pooling and post-ops to the graph output they feed.

    A breadth-first search over post-op paths: the shortest one reaching ``output`` (any graph
    output when None) wins, so ``logits -> Softmax -> ZipMap`` is found next to an ``ArgMax``.
    """
    consumers = index.consumers.get(spec.logits, [])
    if spec.logits not in index.graph_outputs and len(consumers) == 1:
        spec = _absorb_pooling(index, spec, consumers[0]) or spec
    paths: list[tuple[str, list[str]]] = [(spec.logits, [])]
    seen = {spec.logits}
    while paths:
        tensor, post_ops = paths.pop(0)
        if tensor in index.graph_outputs and output in (None, tensor):
            return dataclasses.replace(spec, output=tensor, post_ops=post_ops)
        for op, produced in steps_forward(index, tensor):
            if produced not in seen and _keeps_winner([*spec.inner_post_ops, *post_ops, op]):
                seen.add(produced)
                paths.append((produced, [*post_ops, op]))
    readers = [node_label(n) for n in index.consumers.get(spec.logits, [])] or "nothing"
    target = f"output '{output}'" if output else "a graph output"
    raise ModelError(
        f"head '{spec.nodes[-1]}' does not reach {target} through {'/'.join(sorted(POST_OPS))} only; "
        f"its logits '{spec.logits}' go to {readers}"
    )


def _why_not(index: GraphIndex, node: onnx.NodeProto) -> str:
    """Why a linear-looking node is not a head: a weight computed at run time, a re-quantized product."""
    if node.op_type == "Add":
        for name in node.input:
            step = step_back(index, index.producer(name)) if index.producer(name) is not None else None
            product = index.producer(step[1]) if step is not None and step[0] == QDQ else None
            if product is not None and product.op_type in _LINEAR_OPS:
                return (
                    f" (the product of {product.op_type} '{node_label(product)}' is re-quantized before its bias is "
                    "added, so the head is not affine; quantize with the head excluded, e.g. nodes_to_exclude)"
                )
    if node.op_type not in _LINEAR_OPS:
        return ""
    weight = node.input[1] if len(node.input) > 1 else ""
    if weight and trace(index, weight) is None:
        producer = index.producer(weight)
        source = "a graph input" if producer is None else f"{producer.op_type} node '{node_label(producer)}'"
        return f" (its weight '{weight}' is computed at run time by {source}, not stored in the model)"
    return ""


def _candidates(index: GraphIndex) -> list[str]:
    return [f"{n.op_type} '{node_label(n)}'" for n in index.model.graph.node if n.op_type in _LINEAR_OPS] or ["none"]
