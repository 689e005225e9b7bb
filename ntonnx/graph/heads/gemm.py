"""``Gemm(embedding, B, C)``: torch's ``nn.Linear`` on a 2-D input, Keras/tf2onnx Dense, ONNX zoo heads.

``transB=1`` stores ``B`` as ``(n_classes, dim)``, ``transB=0`` as ``(dim, n_classes)``; ``alpha``
scales the product and ``beta`` the bias, and both are honoured. ``C`` may be absent (no bias), a
scalar or ``(1, n_classes)``. ``transA=1`` is not a head.
"""

from __future__ import annotations

import onnx

from ntonnx.graph.heads.base import HeadSpec, ParamHead, single_node_head
from ntonnx.graph.heads.params import make_ref
from ntonnx.graph.index import GraphIndex, attribute


class _Gemm(ParamHead):
    name = "gemm"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        if node.op_type != "Gemm" or attribute(node, "transA", 0) != 0:
            return None
        trans_b = attribute(node, "transB", 0)
        found = make_ref(index, node, 1, "out_in" if trans_b else "in_out", float(attribute(node, "alpha", 1.0)))
        if found is None or found[1].ndim != 2:
            return None
        weight_ref, weight = found
        n_classes, dim = weight.shape if trans_b else weight.shape[::-1]
        bias_ref = None
        if len(node.input) > 2 and node.input[2]:
            bias_found = make_ref(index, node, 2, "vector", float(attribute(node, "beta", 1.0)))
            if bias_found is None or bias_found[1].size not in (1, n_classes):
                return None
            bias_ref = bias_found[0]
        return single_node_head(self.name, index, node, dim=dim, n_classes=n_classes, weight=weight_ref, bias=bias_ref)


gemm = _Gemm()
