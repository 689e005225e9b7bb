"""A read-only index over an ONNX graph, and constant-tensor access and edits by name.

The head patterns need three questions answered quickly: which node produces a tensor, which
nodes consume it, and whether it is a constant (an initializer or a ``Constant`` node) and with
what value. Edits go through :func:`replace_constant`, which keeps the tensor's dtype and gives
the head its own copy when another node shares it, and :func:`add_initializer`, which also lists
a new initializer as a graph input where the model's IR version (< 4) requires it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from ntonnx.errors import ModelError, first_line

#: IR versions before 4 require every initializer to also be a graph input.
_IR_INITIALIZERS_AS_INPUTS = 4


class GraphIndex:
    """Producer/consumer maps of ``model.graph`` (the main graph; subgraphs are not indexed)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.output:
                if name:
                    self.producers[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.graph_outputs = [o.name for o in graph.output]
        init_names = set(self.initializers)
        self.graph_inputs = [i.name for i in graph.input if i.name not in init_names]

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        """The node whose output is ``tensor`` (None for graph inputs and initializers)."""
        return self.producers.get(tensor)

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of ``tensor`` if it is an initializer or a ``Constant`` node's output."""
        if tensor in self.initializers:
            return _decode(self.initializers[tensor], tensor)
        node = self.producers.get(tensor)
        if node is not None and node.op_type == "Constant" and not node.input:
            return constant_node_value(node)
        return None

    def node_by_name(self, name: str) -> onnx.NodeProto | None:
        """The node called ``name``, or, for unnamed nodes, the one producing tensor ``name``."""
        for node in self.model.graph.node:
            if node.name == name:
                return node
        return self.producers.get(name)

    def downstream(self, tensors: list[str]) -> set[str]:
        """Every tensor computed (directly or not) from any of ``tensors``, themselves included."""
        reached, stack = set(tensors), list(tensors)
        while stack:
            for node in self.consumers.get(stack.pop(), []):
                for out in node.output:
                    if out and out not in reached:
                        reached.add(out)
                        stack.append(out)
        return reached

    def unique_name(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``... whichever no tensor or node of the graph uses."""
        taken = set(self.initializers) | set(self.producers) | set(self.graph_inputs)
        taken |= {n.name for n in self.model.graph.node}
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node, whichever of its attributes holds it."""
    for attr in node.attribute:
        if attr.name == "value":
            return _decode(attr.t, node.output[0])
        if attr.name in ("value_float", "value_int"):
            return np.array(onnx.helper.get_attribute_value(attr))
        if attr.name in ("value_floats", "value_ints"):
            return np.array(list(onnx.helper.get_attribute_value(attr)))
    return None


def _decode(proto: onnx.TensorProto, name: str) -> np.ndarray:
    """A constant's value; a tensor whose bytes do not match its dtype and shape is a ModelError."""
    try:
        return numpy_helper.to_array(proto)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"constant tensor '{name}' is corrupt: {first_line(exc)}") from None


def node_label(node: onnx.NodeProto) -> str:
    """A name for messages: the node's name, or its op and first output when it has none."""
    return node.name or f"{node.op_type}->{node.output[0]}"


def attribute(node: onnx.NodeProto, name: str, default):
    """The value of attribute ``name`` of ``node`` (``default`` when absent)."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def add_initializer(model: onnx.ModelProto, value: np.ndarray, name: str) -> None:
    """Append initializer ``name``; under IR < 4 also declare it as a graph input, as required."""
    tensor = numpy_helper.from_array(value, name)
    model.graph.initializer.append(tensor)
    if model.ir_version < _IR_INITIALIZERS_AS_INPUTS:
        elem = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, elem, list(value.shape)))


def replace_constant(model: onnx.ModelProto, tensor: str, value: np.ndarray, owner: onnx.NodeProto) -> str:
    """Set constant ``tensor`` to ``value`` for ``owner`` and return the name now feeding it.

    ``value`` is cast to the stored dtype. When another node also reads the tensor, a fresh
    initializer is created for ``owner`` alone, so the other node's numbers do not change.
    The model is edited in place.
    """
    index = GraphIndex(model)
    old = index.constant(tensor)
    if old is None:
        raise ValueError(f"tensor '{tensor}' is not a constant")
    new_array = np.asarray(value).astype(old.dtype, copy=False)
    if any(node is not owner for node in index.consumers.get(tensor, [])):
        new_name = index.unique_name(f"{tensor}_ntonnx")
        add_initializer(model, new_array, new_name)
        for i, name in enumerate(owner.input):
            if name == tensor:
                owner.input[i] = new_name
        return new_name
    if tensor in index.initializers:
        index.initializers[tensor].CopyFrom(numpy_helper.from_array(new_array, tensor))
        return tensor
    constant_node = index.producers[tensor]
    del constant_node.attribute[:]
    constant_node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(new_array, tensor)))
    return tensor


def remove_unused(model: onnx.ModelProto, candidates: list[onnx.NodeProto]) -> None:
    """Drop those of ``candidates`` whose outputs nothing reads any more, and their dead constants.

    Used after a head is rebuilt from other nodes; the model is edited in place. Repeats until
    stable, so a chain of now-dead nodes disappears entirely. Only initializers that a removed
    node read (and nothing reads now) are dropped; the rest of the graph is left as it was.
    """
    pending = list(candidates)
    read: set[str] = set()
    changed = True
    while changed:
        changed = False
        index = GraphIndex(model)
        outputs = set(index.graph_outputs)
        for node in list(pending):
            if not any(out in outputs or index.consumers.get(out) for out in node.output if out):
                read.update(node.input)
                model.graph.node.remove(node)
                pending.remove(node)
                changed = True
    index = GraphIndex(model)
    dead = {name for name in read if name in index.initializers and not index.consumers.get(name)}
    dead -= set(index.graph_outputs)
    for tensor in [t for t in model.graph.initializer if t.name in dead]:
        model.graph.initializer.remove(tensor)
    for value in [v for v in model.graph.input if v.name in dead]:
        model.graph.input.remove(value)
