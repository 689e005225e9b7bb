"""Finding the head of a classifier graph.

The patterns are a registry (one small module each, tried in order). Location walks back from a
graph output through shape-preserving post-ops (Softmax, Sigmoid, Cast, ...) to the node that
produces the logits and asks each pattern whether it matches; users override with a node name or
the embedding tensor when the graph is unusual.
"""

from __future__ import annotations

import dataclasses

import onnx

from ntonnx.errors import ModelError, UsageError
from ntonnx.graph import GraphIndex, node_label
from ntonnx.heads.base import HeadPattern, HeadSpec, WeightRef, read_head, write_head
from ntonnx.heads.gemm import gemm
from ntonnx.heads.matmul import matmul, matmul_add

__all__ = ["PATTERNS", "HeadSpec", "WeightRef", "locate_head", "read_head", "write_head"]

#: Tried in this order on the node that produces the logits.
PATTERNS: list[HeadPattern] = [gemm, matmul_add, matmul]

#: Ops that may sit between the head and the graph output without changing which class wins.
POST_OPS = frozenset({"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Cast", "Flatten", "Reshape"})

_LINEAR_OPS = ("Gemm", "MatMul")


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
    head_node : name of the head node (or of the tensor it produces), skipping detection.
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


def _detect(index: GraphIndex, output: str | None) -> HeadSpec:
    outputs = [output] if output else index.graph_outputs
    found: list[HeadSpec] = []
    reached: list[str] = []
    for name in outputs:
        node, post_ops = _walk_back(index, name)
        if node is None:
            reached.append(f"'{name}' <- graph input or constant")
            continue
        spec = _match(index, node)
        if spec is None:
            reached.append(f"'{name}' <- {node.op_type} node '{node_label(node)}'")
            continue
        found.append(dataclasses.replace(spec, output=name, post_ops=post_ops))
    heads = {spec.logits for spec in found}
    if len(heads) == 1:
        return min(found, key=lambda spec: len(spec.post_ops))
    if not found:
        raise ModelError(
            f"no linear head (Gemm, MatMul+Add, MatMul with constant weights) produces "
            f"{' or '.join(reached)}; candidates: {_candidates(index)}; "
            "pass --head-node NAME or --embedding TENSOR"
        )
    raise ModelError(
        f"several outputs end in different heads ({', '.join(f'{s.output} <- {s.nodes[-1]}' for s in found)}); "
        "pass --output NAME to choose one"
    )


def _walk_back(index: GraphIndex, tensor: str) -> tuple[onnx.NodeProto | None, list[str]]:
    post_ops: list[str] = []
    node = index.producer(tensor)
    while node is not None and node.op_type in POST_OPS:
        post_ops.insert(0, node.op_type)
        node = index.producer(node.input[0])
    return node, post_ops


def _match(index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
    for pattern in PATTERNS:
        spec = pattern.match(index, node)
        if spec is not None:
            return spec
    return None


def _head_from_node(index: GraphIndex, name: str) -> HeadSpec:
    node = index.node_by_name(name)
    if node is None:
        raise UsageError(f"--head-node '{name}' names no node in the graph (candidates: {_candidates(index)})")
    # A named MatMul is usually followed by its bias Add: prefer the pair.
    for consumer in index.consumers.get(node.output[0], []):
        spec = _match(index, consumer) if node.op_type == "MatMul" else None
        if spec is not None:
            return spec
    spec = _match(index, node)
    if spec is None:
        raise ModelError(
            f"--head-node '{name}' is a {node.op_type} node, not a linear head with constant weights "
            f"(candidates: {_candidates(index)})"
        )
    return spec


def _head_from_embedding(index: GraphIndex, tensor: str) -> HeadSpec:
    consumers = [n for n in index.consumers.get(tensor, []) if n.op_type in _LINEAR_OPS]
    specs = [s for s in (_head_from_node_safe(index, n) for n in consumers) if s is not None]
    if len(specs) == 1:
        return specs[0]
    if not specs:
        raise UsageError(
            f"--embedding '{tensor}' feeds no Gemm or MatMul with constant weights (candidates: {_candidates(index)})"
        )
    raise UsageError(f"--embedding '{tensor}' feeds several linear nodes; pass --head-node NAME instead")


def _head_from_node_safe(index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
    try:
        return _head_from_node(index, node.name or node.output[0])
    except (ModelError, UsageError):
        return None


def _attach_output(index: GraphIndex, spec: HeadSpec, output: str | None) -> HeadSpec:
    """Follow the head's logits forward through post-ops to the graph output they feed."""
    tensor, post_ops = spec.logits, []
    while tensor not in index.graph_outputs:
        consumers = index.consumers.get(tensor, [])
        if len(consumers) != 1 or consumers[0].op_type not in POST_OPS:
            raise ModelError(
                f"head '{spec.nodes[-1]}' does not feed a graph output through "
                f"{'/'.join(sorted(POST_OPS))} only; its logits '{spec.logits}' go to "
                f"{[node_label(n) for n in consumers] or 'nothing'}"
            )
        post_ops.append(consumers[0].op_type)
        tensor = consumers[0].output[0]
    if output is not None and tensor != output:
        raise UsageError(f"head '{spec.nodes[-1]}' feeds output '{tensor}', not --output '{output}'")
    return dataclasses.replace(spec, output=tensor, post_ops=post_ops)


def _candidates(index: GraphIndex) -> list[str]:
    return [node_label(n) for n in index.model.graph.node if n.op_type in _LINEAR_OPS] or ["none"]
