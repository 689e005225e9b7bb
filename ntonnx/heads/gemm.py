"""``Gemm(embedding, B, C)``: torch's ``nn.Linear`` on a 2-D input, Keras/tf2onnx Dense, ONNX zoo heads.

``transB=1`` stores ``B`` as ``(n_classes, dim)``, ``transB=0`` as ``(dim, n_classes)``; ``alpha``
scales the product and ``beta`` the bias, and both are honoured. ``transA=1`` is not a head.
"""

from __future__ import annotations

import onnx

from ntonnx.graph import GraphIndex, attribute, node_label
from ntonnx.heads.base import HeadSpec, WeightRef


class _Gemm:
    name = "gemm"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        return _match(index, node)


def _match(index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
    if node.op_type != "Gemm" or attribute(node, "transA", 0) != 0:
        return None
    weight = index.constant(node.input[1])
    if weight is None or weight.ndim != 2:
        return None
    trans_b = attribute(node, "transB", 0)
    n_classes, dim = weight.shape if trans_b else weight.shape[::-1]
    out = node.output[0]
    bias_ref = None
    if len(node.input) > 2 and node.input[2]:
        bias = index.constant(node.input[2])
        if bias is None or bias.size not in (1, n_classes):
            return None
        bias_ref = WeightRef(node.input[2], "vector", out, float(attribute(node, "beta", 1.0)))
    return HeadSpec(
        pattern="gemm",
        nodes=[node_label(node)],
        embedding=node.input[0],
        dim=int(dim),
        logits=out,
        n_classes=int(n_classes),
        output=out,
        weight=WeightRef(node.input[1], "out_in" if trans_b else "in_out", out, float(attribute(node, "alpha", 1.0))),
        bias=bias_ref,
        dtype=str(weight.dtype),
    )


gemm = _Gemm()
