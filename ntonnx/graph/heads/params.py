"""Where a head parameter's numbers are stored, and reading/writing them through what feeds the head.

Exporters do not always feed the head straight from an initializer: PaddlePaddle uses ``Constant``
nodes, tf2onnx and tied weights put a ``Transpose`` in between, Caffe2's converter a ``Reshape`` to
a constant shape, mixed-precision exports ``Cast`` float16 weights up, and QDQ-quantized models
``DequantizeLinear`` int8 ones. :func:`trace` follows such a chain back to the stored constant;
:func:`read_param` computes the value the head actually sees; :func:`write_param` inverts the chain
(transposing back, reshaping to the stored shape, re-quantizing with a scale fitted to the new
values) so the stored constant keeps its dtype and shape and the graph keeps its nodes. When any
tensor of the chain is read by another node too (tied weights, a shared scale), the head first gets
its own copy of the chain, so the other node's numbers do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx

from ntonnx.graph.index import GraphIndex, add_initializer, attribute, replace_constant

#: Ops that may sit between a stored constant and the head without making the weight "computed".
CHAIN_OPS = ("Identity", "Transpose", "Reshape", "Cast", "DequantizeLinear")
_QUANT_DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32"})


@dataclass(frozen=True)
class WeightRef:
    """Where one head parameter lives and how it reaches the head.

    Attributes
    ----------
    tensor : the stored constant (an initializer or a ``Constant`` node's output).
    layout : how the value the head reads is laid out: ``"out_in"`` ``(n_classes, dim)`` (Gemm
        ``transB=1``, torch's Linear, Conv), ``"in_out"`` ``(dim, n_classes)`` (Gemm ``transB=0``,
        MatMul), ``"vector"`` for a bias.
    consumer : first output of the head node that reads the parameter, to find it in a copy.
    input_index : which input of that node the parameter is.
    scale : factor the head applies to it (Gemm's ``alpha``/``beta``).
    via : op types between the stored constant and the head, stored side first
        (e.g. ``("DequantizeLinear", "Transpose")``); empty when the head reads it directly.
    """

    tensor: str
    layout: Literal["out_in", "in_out", "vector"]
    consumer: str
    input_index: int
    scale: float = 1.0
    via: tuple[str, ...] = ()


def trace(index: GraphIndex, tensor: str) -> tuple[str, list[onnx.NodeProto]] | None:
    """The stored constant behind ``tensor`` and the chain of nodes to it (head side first).

    None when ``tensor`` is computed from anything but constants through :data:`CHAIN_OPS`
    (a weight computed at run time is not a head ntonnx can rewrite).
    """
    chain: list[onnx.NodeProto] = []
    while index.constant(tensor) is None:
        node = index.producer(tensor)
        if node is None or node.op_type not in CHAIN_OPS or not _chain_node_ok(index, node):
            return None
        chain.append(node)
        tensor = node.input[0]
    return tensor, chain


def _chain_node_ok(index: GraphIndex, node: onnx.NodeProto) -> bool:
    if node.op_type == "Reshape":  # to a shape known without running the model
        return len(node.input) > 1 and index.constant(node.input[1]) is not None
    if node.op_type != "DequantizeLinear":
        return True
    stored = index.constant(node.input[0])
    quant_params_constant = all(index.constant(name) is not None for name in node.input[1:] if name)
    # Blocked quantization (opset 21's block_size) and float8/int4 storage are left to the caller's error.
    return (
        stored is not None
        and stored.dtype.name in _QUANT_DTYPES
        and quant_params_constant
        and attribute(node, "block_size", 0) == 0
    )


def make_ref(
    index: GraphIndex, node: onnx.NodeProto, input_index: int, layout: str, scale: float = 1.0
) -> tuple[WeightRef, np.ndarray] | None:
    """The :class:`WeightRef` of ``node``'s input ``input_index`` and the value the node reads."""
    traced = trace(index, node.input[input_index])
    if traced is None:
        return None
    root, chain = traced
    ref = WeightRef(
        tensor=root,
        layout=layout,
        consumer=node.output[0],
        input_index=input_index,
        scale=scale,
        via=tuple(n.op_type for n in reversed(chain)),
    )
    return ref, _forward(index, root, chain)


def stored_dtype(index: GraphIndex, ref: WeightRef) -> str:
    """The numpy dtype name of the stored constant (``int8`` for a quantized weight)."""
    return index.constant(ref.tensor).dtype.name


def read_param(index: GraphIndex, ref: WeightRef) -> np.ndarray:
    """The value the head reads for ``ref`` (after any Transpose/Cast/DequantizeLinear)."""
    head = index.producer(ref.consumer)
    root, chain = trace(index, head.input[ref.input_index])
    return _forward(index, root, chain)


def quant_scale(index: GraphIndex, ref: WeightRef) -> np.ndarray | None:
    """The ``DequantizeLinear`` scale of a quantized parameter (None when not quantized)."""
    head = index.producer(ref.consumer)
    _, chain = trace(index, head.input[ref.input_index])
    for node in chain:
        if node.op_type == "DequantizeLinear":
            return index.constant(node.input[1]).astype(np.float64)
    return None


def write_param(model: onnx.ModelProto, ref: WeightRef, value: np.ndarray, *, int32_scale=None) -> None:
    """Make the head read ``value`` (shaped as the head reads it) for ``ref``; edits ``model``.

    ``int32_scale``, when given, is the scale to quantize an int32 (bias) parameter with: QDQ
    runtimes assume a bias scale of input scale times weight scale, so it must follow the weight's.
    """
    index = GraphIndex(model)
    head = index.producer(ref.consumer)
    root, chain = trace(index, head.input[ref.input_index])
    if chain and _shared(index, head, ref.input_index, root, chain):
        _own_chain(model, index, head, ref.input_index, root, chain)
        index = GraphIndex(model)
        head = index.producer(ref.consumer)
        root, chain = trace(index, head.input[ref.input_index])
    value = np.asarray(value, dtype=np.float64)
    shapes = _input_shapes(index, root, chain)
    for node, shape in zip(chain, shapes, strict=True):
        if node.op_type == "Transpose":
            value = np.transpose(value, np.argsort(_perm(node, value.ndim)))
        elif node.op_type == "Reshape":
            value = value.reshape(shape)
        elif node.op_type == "DequantizeLinear":
            value = _requantize(model, node, value, int32_scale)
    owner = chain[-1] if chain else head
    stored = GraphIndex(model).constant(root)
    replace_constant(model, root, value.reshape(stored.shape), owner)


def _forward(index: GraphIndex, root: str, chain: list[onnx.NodeProto]) -> np.ndarray:
    value = index.constant(root)
    for node in reversed(chain):
        if node.op_type == "Transpose":
            value = np.transpose(value, _perm(node, value.ndim))
        elif node.op_type == "Reshape":
            value = value.reshape(_reshaped(index, node, value.shape))
        elif node.op_type == "Cast":
            value = value.astype(onnx.helper.tensor_dtype_to_np_dtype(attribute(node, "to", 1)))
        elif node.op_type == "DequantizeLinear":
            scale, zero_point = _quant_params(index, node, value)
            value = ((value.astype(np.float64) - zero_point) * scale).astype(scale.dtype)
    return value


def _input_shapes(index: GraphIndex, root: str, chain: list[onnx.NodeProto]) -> list[tuple[int, ...]]:
    """The shape of each chain node's input (head side first), for undoing its Reshape."""
    shape = index.constant(root).shape
    shapes = []
    for node in reversed(chain):
        shapes.append(shape)
        if node.op_type == "Transpose":
            shape = tuple(shape[axis] for axis in _perm(node, len(shape)))
        elif node.op_type == "Reshape":
            shape = _reshaped(index, node, shape)
    return shapes[::-1]


def _reshaped(index: GraphIndex, node: onnx.NodeProto, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of Reshape ``node`` on an input of ``shape``: ONNX's 0 (copy, unless
    ``allowzero``) and -1 (inferred) entries resolved."""
    target = [int(d) for d in index.constant(node.input[1]).reshape(-1)]
    if not attribute(node, "allowzero", 0):
        target = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(target)]
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = int(np.prod(shape)) // max(known, 1)
    return tuple(target)


def _perm(node: onnx.NodeProto, ndim: int) -> list[int]:
    return list(attribute(node, "perm", list(range(ndim))[::-1]))


def _quant_params(index: GraphIndex, node: onnx.NodeProto, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of a DequantizeLinear, shaped to broadcast against ``stored``."""
    scale = index.constant(node.input[1])
    has_zp = len(node.input) > 2 and node.input[2]
    zero_point = index.constant(node.input[2]).astype(np.float64) if has_zp else np.zeros_like(scale, np.float64)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * stored.ndim
        shape[attribute(node, "axis", 1) % stored.ndim] = -1
        return scale.reshape(shape), zero_point.reshape(shape)
    return scale, zero_point


def _requantize(model: onnx.ModelProto, node: onnx.NodeProto, value: np.ndarray, int32_scale) -> np.ndarray:
    """Quantize ``value`` for ``node`` (a DequantizeLinear), writing a scale fitted to it.

    The zero point is kept (symmetric stays symmetric) and each channel's scale is the smallest
    that represents that channel's range without clipping; only when the zero point makes that
    impossible (uint8 with zero point 0 and negative values) is an asymmetric one computed.
    """
    index = GraphIndex(model)
    stored = index.constant(node.input[0])
    info = np.iinfo(stored.dtype)
    old_scale = index.constant(node.input[1])
    _, zero_point = _quant_params(index, node, stored)
    per_axis = old_scale.ndim == 1 and old_scale.size > 1
    axis = attribute(node, "axis", 1) % stored.ndim if per_axis else None
    reduce_axes = tuple(i for i in range(value.ndim) if i != axis)
    high = np.max(np.maximum(value, 0), axis=reduce_axes, keepdims=True)
    low = np.min(np.minimum(value, 0), axis=reduce_axes, keepdims=True)
    if int32_scale is not None:
        scale = np.asarray(int32_scale, np.float64).reshape(-1)
        scale = (scale if per_axis else scale[:1]).reshape(high.shape)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(high > 0, high / (info.max - zero_point), 0.0)
            down = np.where(low < 0, low / (info.min - zero_point), 0.0)
        scale = np.maximum(up, down)
        if not np.all(np.isfinite(scale) & (scale >= 0)):
            scale = (high - low) / (info.max - info.min)
            zero_point = np.round(info.min - low / np.where(scale > 0, scale, 1.0))
            _write_zero_point(model, node, zero_point, stored.dtype, per_axis)
        scale = np.where(scale > 0, scale, 1.0)
    quantized = np.clip(np.round(value / scale + zero_point), info.min, info.max)
    new_scale = scale.reshape(-1) if per_axis else scale.reshape(old_scale.shape)
    replace_constant(model, node.input[1], new_scale.astype(old_scale.dtype), node)
    return quantized


def _write_zero_point(model: onnx.ModelProto, node: onnx.NodeProto, zero_point, dtype, per_axis: bool) -> None:
    value = np.asarray(zero_point).reshape(-1) if per_axis else np.asarray(zero_point).reshape(())
    value = value.astype(dtype)
    if len(node.input) > 2 and node.input[2]:
        replace_constant(model, node.input[2], value, node)
        return
    name = GraphIndex(model).unique_name(f"{node.input[0]}_zero_point")
    add_initializer(model, value, name)
    while len(node.input) < 2:
        node.input.append("")
    node.input.append(name)


def _shared(index: GraphIndex, head: onnx.NodeProto, input_index: int, root: str, chain: list[onnx.NodeProto]) -> bool:
    readers = [head, *chain]
    tensors = [head.input[input_index]] + [node.input[0] for node in chain]
    return (
        any(
            any(consumer is not reader for consumer in index.consumers.get(tensor, []))
            for tensor, reader in zip(tensors, readers, strict=True)
        )
        or root in index.graph_outputs
    )


def _own_chain(
    model: onnx.ModelProto,
    index: GraphIndex,
    head: onnx.NodeProto,
    input_index: int,
    root: str,
    chain: list[onnx.NodeProto],
) -> None:
    """Give ``head`` private copies of ``root`` and the ``chain`` nodes, inserted just before it."""
    previous = index.unique_name(f"{root}_ntonnx")
    add_initializer(model, index.constant(root), previous)
    copies: list[onnx.NodeProto] = []
    for node in reversed(chain):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[0] = previous
        copy.output[0] = index.unique_name(f"{node.output[0]}_ntonnx")
        copy.name = index.unique_name(f"{node.name or node.op_type}_ntonnx")
        copies.append(copy)
        previous = copy.output[0]
    head.input[input_index] = previous
    nodes = list(model.graph.node)
    position = next(i for i, node in enumerate(nodes) if node is head or node == head)
    nodes[position:position] = copies
    del model.graph.node[:]
    model.graph.node.extend(nodes)
