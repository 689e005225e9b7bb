"""``Add(MatMul(embedding, W), b)`` (bias on either side) and a bare ``MatMul(embedding, W)``.

This is what torch exports for ``nn.Linear`` on inputs of rank other than 2 (and its dynamo
exporter on every rank), what skl2onnx emits for an MLP and tf2onnx for many Keras Dense layers.
``W`` is read as ``(dim, n_classes)``, directly or through a Transpose/Reshape/Cast/DequantizeLinear.
torch exports of models that autocast put ``Cast`` nodes to the type the product already has
between the MatMul and the Add (``MatMul -> Cast(float->float) -> Add``); such Casts compute
nothing and are part of the head.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from ntonnx.graph.heads.base import HeadSpec, ParamHead, single_node_head
from ntonnx.graph.heads.params import make_ref, read_param
from ntonnx.graph.index import GraphIndex, attribute, node_label


class _MatMulAdd(ParamHead):
    name = "matmul_add"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        if node.op_type != "Add" or len(node.input) != 2:
            return None
        for matmul_side in (0, 1):
            matmul, casts = _behind_casts(index, node.input[matmul_side])
            if matmul is None:
                continue
            spec = _match_matmul(index, matmul)
            if spec is None or not _noop(casts, read_param(index, spec.weight).dtype):
                continue
            if any(len(index.consumers[n.output[0]]) != 1 for n in [matmul, *casts]):
                continue  # the product used elsewhere too: changing W would change that as well
            found = make_ref(index, node, 1 - matmul_side, "vector")
            if found is None or found[1].size not in (1, spec.n_classes):
                continue
            return dataclasses.replace(
                spec,
                pattern=self.name,
                nodes=[*spec.nodes, *map(node_label, casts), node_label(node)],
                logits=node.output[0],
                output=node.output[0],
                bias=found[0],
            )
        return None


class _MatMul(ParamHead):
    name = "matmul"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        return _match_matmul(index, node)


def _match_matmul(index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
    if node.op_type != "MatMul" or index.constant(node.input[0]) is not None:
        return None
    found = make_ref(index, node, 1, "in_out")
    if found is None or found[1].ndim != 2:
        return None
    weight_ref, weight = found
    dim, n_classes = weight.shape
    return single_node_head("matmul", index, node, dim=dim, n_classes=n_classes, weight=weight_ref, bias=None)


def _behind_casts(index: GraphIndex, tensor: str) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto]]:
    """The node producing ``tensor`` once any ``Cast`` nodes in between are passed (those, product side first)."""
    casts: list[onnx.NodeProto] = []
    node = index.producer(tensor)
    while node is not None and node.op_type == "Cast":
        casts.insert(0, node)
        node = index.producer(node.input[0])
    return node, casts


def _noop(casts: list[onnx.NodeProto], dtype: np.dtype) -> bool:
    """Whether every Cast converts to ``dtype``, the type its input already has (so computes nothing)."""
    targets = [attribute(cast, "to", None) for cast in casts]
    return all(to and onnx.helper.tensor_dtype_to_np_dtype(to) == dtype for to in targets)


matmul_add = _MatMulAdd()
matmul = _MatMul()
