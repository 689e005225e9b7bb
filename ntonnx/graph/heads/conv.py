"""A 1x1 ``Conv`` classifier, usually followed by a global average pool and a flatten.

SqueezeNet-style and TF-slim/Keras MobileNet-style heads classify with a 1x1 convolution (weight
``(n_classes, dim, 1, 1)``) either on pooled features or before a global average pool. Both are
``mean_hw(e) @ W.T + b``: the embedding is the conv input averaged over its spatial axes. The conv
must be a plain per-pixel linear map (group 1, stride 1, no padding); a ReLU between the conv and
the pool (SqueezeNet 1.x) makes the head non-linear and is not accepted.
"""

from __future__ import annotations

import onnx

from ntonnx.graph.heads.base import HeadSpec, ParamHead, single_node_head
from ntonnx.graph.heads.params import make_ref
from ntonnx.graph.heads.pooling import Pooling
from ntonnx.graph.index import GraphIndex, attribute


class _Conv1x1(ParamHead):
    name = "conv1x1"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        if node.op_type != "Conv" or attribute(node, "group", 1) != 1:
            return None
        found = make_ref(index, node, 1, "out_in")
        if found is None or found[1].ndim < 3 or any(k != 1 for k in found[1].shape[2:]):
            return None
        weight_ref, weight = found
        if any(s != 1 for s in attribute(node, "strides", [])) or any(p != 0 for p in attribute(node, "pads", [])):
            return None
        n_classes, dim = weight.shape[:2]
        bias_ref = None
        if len(node.input) > 2 and node.input[2]:
            bias_found = make_ref(index, node, 2, "vector")
            if bias_found is None or bias_found[1].size != n_classes:
                return None
            bias_ref = bias_found[0]
        return single_node_head(
            self.name,
            index,
            node,
            dim=dim,
            n_classes=n_classes,
            weight=weight_ref,
            bias=bias_ref,
            pooling=Pooling("spatial_mean"),
        )


conv1x1 = _Conv1x1()
