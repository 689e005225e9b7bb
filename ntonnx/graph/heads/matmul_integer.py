"""A dynamically quantized head: onnxruntime's ``quantize_dynamic`` output for MatMul/Gemm.

The float product ``e @ W`` becomes ``Mul(Cast(MatMulInteger(q(e), Wq, zp_e, zp_W)), s_e * s_W)``
with ``q(e), s_e, zp_e = DynamicQuantizeLinear(e)``, usually followed by ``Add(., b)``. Its
effective weight is ``(Wq - zp_W) * s_W``. Re-quantizing a re-solved head would add rounding of
both weights and activations on top of the fit and make the result unverifiable exactly, so the
rewrite replaces the integer product by a float ``MatMul(e, W)`` writing the same tensor: the
head (only) becomes float, ``dim x n_classes x 4`` bytes, and computes ``e @ W.T + b`` exactly.
Nodes only the old product used (the activation quantizer, the scale product) are removed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from ntonnx.graph.heads.base import HeadSpec, checked_solution, linear_head, write_bias
from ntonnx.graph.heads.params import make_ref, read_param
from ntonnx.graph.index import GraphIndex, add_initializer, attribute, node_label, remove_unused


class _MatMulInteger:
    name = "matmul_integer"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        if node.op_type != "Add" or len(node.input) != 2:
            return _match_product(index, node)
        for side in (0, 1):
            product = index.producer(node.input[side])
            spec = _match_product(index, product) if product is not None else None
            if spec is None or len(index.consumers[product.output[0]]) != 1:
                continue
            found = make_ref(index, node, 1 - side, "vector")
            if found is None or found[1].size not in (1, spec.n_classes):
                continue
            return dataclasses.replace(
                spec, nodes=[*spec.nodes, node_label(node)], logits=node.output[0], output=node.output[0], bias=found[0]
            )
        return None

    def read(self, model: onnx.ModelProto, spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
        index = GraphIndex(model)
        integer = index.producer(spec.weight.consumer)
        stored = read_param(index, spec.weight).astype(np.float64)
        zero_point, scale = _weight_quantization(index, integer)
        W = ((stored - zero_point) * scale).T
        b = np.zeros(spec.n_classes)
        if spec.bias is not None:
            b = np.broadcast_to(read_param(index, spec.bias).astype(np.float64).ravel(), (spec.n_classes,)).copy()
        return W, b

    def write(self, model: onnx.ModelProto, spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> None:
        W, b = checked_solution(spec, W, b)
        index = GraphIndex(model)
        integer = index.producer(spec.weight.consumer)
        cast, product, scales = _product_nodes(index, integer)
        float_dtype = onnx.helper.tensor_dtype_to_np_dtype(attribute(cast, "to", onnx.TensorProto.FLOAT))
        weight_name = index.unique_name(f"{spec.weight.tensor}_float")
        add_initializer(model, W.T.astype(float_dtype), weight_name)
        matmul = onnx.helper.make_node(
            "MatMul",
            [spec.embedding, weight_name],
            [product.output[0]],
            name=index.unique_name(f"{product.name or 'head'}_float"),
        )
        nodes = list(model.graph.node)
        nodes[next(i for i, node in enumerate(nodes) if node == product)] = matmul
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        remove_unused(model, [cast, integer, scales, index.producer(integer.input[0])])
        if spec.bias is not None:
            write_bias(model, spec, b)


def _match_product(index: GraphIndex, mul: onnx.NodeProto) -> HeadSpec | None:
    """The head if ``mul`` is ``Cast(MatMulInteger(q(e), Wq, ...)) * (s_e * s_W)``."""
    if mul.op_type != "Mul":
        return None
    for side in (0, 1):
        cast = index.producer(mul.input[side])
        integer = index.producer(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
        if integer is None or integer.op_type != "MatMulInteger":
            continue
        quantizer = index.producer(integer.input[0])
        if quantizer is None or quantizer.op_type != "DynamicQuantizeLinear":
            continue
        if len(integer.input) > 2 and integer.input[2] and integer.input[2] != quantizer.output[2]:
            continue
        found = make_ref(index, integer, 1, "in_out")
        if found is None or found[1].ndim != 2 or _weight_quantization(index, integer) is None:
            continue
        ref, stored = found
        dim, n_classes = stored.shape
        return linear_head(
            "matmul_integer",
            index,
            [quantizer, integer, cast, mul],
            embedding=quantizer.input[0],
            logits=mul.output[0],
            dim=dim,
            n_classes=n_classes,
            weight=ref,
            bias=None,
        )
    return None


def _product_nodes(index: GraphIndex, integer: onnx.NodeProto):
    """The Cast after ``integer``, the Mul applying the scales, and the Mul computing the scales."""
    cast = index.consumers[integer.output[0]][0]
    product = index.consumers[cast.output[0]][0]
    scales = index.producer(next(name for name in product.input if name != cast.output[0]))
    return cast, product, scales


def _weight_quantization(index: GraphIndex, integer: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """``zp_W`` and ``s_W`` of shape () or (n_classes,), or None if they are not constants."""
    consumers = index.consumers.get(integer.output[0], [])
    if len(consumers) != 1 or len(index.consumers.get(consumers[0].output[0], [])) != 1:
        return None
    _, _, scales = _product_nodes(index, integer)
    quantizer = index.producer(integer.input[0])
    if scales is None or scales.op_type != "Mul" or list(scales.input).count(quantizer.output[1]) != 1:
        return None
    others = [name for name in scales.input if name != quantizer.output[1]]
    scale = index.constant(others[0])
    zero_point = index.constant(integer.input[3]) if len(integer.input) > 3 and integer.input[3] else np.zeros(())
    if scale is None or zero_point is None:
        return None
    return zero_point.astype(np.float64).reshape(-1).squeeze(), scale.astype(np.float64).reshape(-1).squeeze()


matmul_integer = _MatMulInteger()
