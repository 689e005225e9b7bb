"""A read-only index over an ONNX graph, and constant-tensor access by name.

The head patterns need three questions answered quickly: which node produces a tensor, which
nodes consume it, and whether it is a constant (an initializer or a ``Constant`` node) and with
what value. Editing goes through :func:`replace_constant`, which keeps the tensor's dtype and
gives the head its own copy when another node shares it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from ntonnx.errors import ModelError, first_line


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
            for attr in node.attribute:
                if attr.name == "value":
                    return _decode(attr.t, tensor)
        return None

    def node_by_name(self, name: str) -> onnx.NodeProto | None:
        """The node called ``name``, or, for unnamed nodes, the one producing tensor ``name``."""
        for node in self.model.graph.node:
            if node.name == name:
                return node
        return self.producers.get(name)


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


def replace_constant(model: onnx.ModelProto, tensor: str, value: np.ndarray, owner: onnx.NodeProto) -> str:
    """Set constant ``tensor`` to ``value`` for ``owner`` and return the name now feeding it.

    ``value`` is cast to the stored dtype. When another node also reads the tensor, a fresh
    initializer is created for ``owner`` alone, so the other node's numbers do not change.
    The model is edited in place.
    """
    index = GraphIndex(model)
    shared = any(node is not owner for node in index.consumers.get(tensor, []))
    old = index.constant(tensor)
    new_array = np.asarray(value).astype(old.dtype, copy=False)
    if shared:
        new_name = _unique_name(index, f"{tensor}_ntonnx")
        model.graph.initializer.append(numpy_helper.from_array(new_array, new_name))
        for i, name in enumerate(owner.input):
            if name == tensor:
                owner.input[i] = new_name
        return new_name
    if tensor in index.initializers:
        index.initializers[tensor].CopyFrom(numpy_helper.from_array(new_array, tensor))
    else:
        constant_node = index.producers[tensor]
        for attr in constant_node.attribute:
            if attr.name == "value":
                attr.t.CopyFrom(numpy_helper.from_array(new_array, attr.t.name))
    return tensor


def _unique_name(index: GraphIndex, base: str) -> str:
    taken = set(index.initializers) | set(index.producers) | set(index.graph_inputs)
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name
