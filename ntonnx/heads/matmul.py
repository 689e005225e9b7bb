"""``Add(MatMul(embedding, W), b)`` (bias on either side) and a bare ``MatMul(embedding, W)``.

This is what torch exports for ``nn.Linear`` on inputs of rank other than 2, what tf2onnx emits for
many Keras Dense layers, and what hand-written graphs use. ``W`` is stored ``(dim, n_classes)``.
"""

from __future__ import annotations

import onnx

from ntonnx.graph import GraphIndex, node_label
from ntonnx.heads.base import HeadSpec, WeightRef


class _MatMulAdd:
    name = "matmul_add"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        if node.op_type != "Add" or len(node.input) != 2:
            return None
        for matmul_side in (0, 1):
            matmul = index.producer(node.input[matmul_side])
            bias = index.constant(node.input[1 - matmul_side])
            if matmul is None or bias is None:
                continue
            spec = _match_matmul(index, matmul)
            if spec is None or bias.size not in (1, spec.n_classes):
                continue
            if len(index.consumers[matmul.output[0]]) != 1:
                continue  # the product is used elsewhere: changing W would change that too
            out = node.output[0]
            return HeadSpec(
                pattern=self.name,
                nodes=[*spec.nodes, node_label(node)],
                embedding=spec.embedding,
                dim=spec.dim,
                logits=out,
                n_classes=spec.n_classes,
                output=out,
                weight=spec.weight,
                bias=WeightRef(node.input[1 - matmul_side], "vector", out),
                dtype=spec.dtype,
            )
        return None


class _MatMul:
    name = "matmul"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        return _match_matmul(index, node)


def _match_matmul(index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
    if node.op_type != "MatMul":
        return None
    weight = index.constant(node.input[1])
    if weight is None or weight.ndim != 2:
        return None
    dim, n_classes = weight.shape
    out = node.output[0]
    return HeadSpec(
        pattern="matmul",
        nodes=[node_label(node)],
        embedding=node.input[0],
        dim=int(dim),
        logits=out,
        n_classes=int(n_classes),
        output=out,
        weight=WeightRef(node.input[1], "in_out", out),
        bias=None,
        dtype=str(weight.dtype),
    )


matmul_add = _MatMulAdd()
matmul = _MatMul()
