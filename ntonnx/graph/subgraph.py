"""The part of a rewritten model that can differ from the input, and a small model of just that part.

Verification (:mod:`ntonnx.graph.verify`) does not need to run the whole written model to know what
it computes. :func:`changed_region` proves structurally that the rewrite touched only what lies
after the embedding: every node and initializer outside it is byte-identical to the input's, so
every tensor outside it (the embedding, and outputs that do not depend on the head) is computed by
the same operations from the same numbers. :func:`head_model` then cuts out the nodes from the
embedding to the outputs that can change, a graph small enough that running it on a few embeddings
costs milliseconds, where a second session on the whole model costs seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ntonnx.graph.index import GraphIndex, node_label


@dataclass(frozen=True)
class ChangedRegion:
    """What the rewrite changed, as tensors of the written graph.

    Attributes
    ----------
    seeds : tensors whose definition changed: outputs of new or edited nodes (and of removed ones),
        and new or edited initializers.
    reached : every tensor computed from a seed, seeds included.
    nodes : labels of the written graph's new or edited nodes.
    """

    seeds: frozenset[str]
    reached: frozenset[str]
    nodes: tuple[str, ...]


class NotProvable(Exception):
    """The structural proof or the head cut does not apply; the reason is the message."""


def changed_region(original: onnx.ModelProto, written: onnx.ModelProto) -> ChangedRegion:
    """Compare the two graphs node by node and initializer by initializer (serialized bytes).

    Nodes are matched as a multiset (a rebuilt head may sit at another position); a node with a
    subgraph attribute, model-local functions or sparse initializers that differ are outside what
    this comparison proves, and raise :class:`NotProvable`.
    """
    if [f.SerializeToString() for f in original.functions] != [f.SerializeToString() for f in written.functions]:
        raise NotProvable("the model's local functions differ")
    if [t.SerializeToString() for t in original.graph.sparse_initializer] != [
        t.SerializeToString() for t in written.graph.sparse_initializer
    ]:
        raise NotProvable("the model's sparse initializers differ")
    before = Counter(node.SerializeToString() for node in original.graph.node)
    seeds: set[str] = set()
    changed: list[str] = []
    for node in written.graph.node:
        key = node.SerializeToString()
        if before[key] > 0:
            before[key] -= 1
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise NotProvable(f"changed node '{node_label(node)}' holds a subgraph")
        changed.append(node_label(node))
        seeds.update(name for name in node.output if name)
    removed = [node for node in original.graph.node if before[node.SerializeToString()] > 0]
    for node in removed:
        before[node.SerializeToString()] -= 1
        seeds.update(name for name in node.output if name)
    old_init = {t.name: t for t in original.graph.initializer}
    for tensor in written.graph.initializer:
        old = old_init.pop(tensor.name, None)
        if old is None or not _same_tensor(old, tensor):
            seeds.add(tensor.name)
    seeds.update(old_init)  # initializers the rewrite removed
    reached = GraphIndex(written).downstream(sorted(seeds))
    return ChangedRegion(frozenset(seeds), frozenset(reached), tuple(changed))


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    """Same name, type, shape and value bytes.

    Protobuf equality first (field by field, bytes by memcmp); when the messages differ only in how
    the values are stored (``float_data`` in one, ``raw_data`` in the other, as saving with external
    data rewrites them), the decoded arrays are compared byte for byte.
    """
    if a == b:
        return True
    if (a.name, a.data_type, list(a.dims)) != (b.name, b.data_type, list(b.dims)):
        return False
    try:
        return numpy_helper.to_array(a).tobytes() == numpy_helper.to_array(b).tobytes()
    except Exception:  # a tensor onnx cannot decode is not proven equal
        return False


def head_model(written: onnx.ModelProto, embedding: str, dtype: np.dtype, targets: list[str]) -> onnx.ModelProto:
    """A model computing ``targets`` from ``embedding`` alone: the written graph's nodes between them.

    Walks back from each target to the embedding, initializers and ``Constant`` nodes; a path that
    reaches any other graph input (the head reads something not computed from the embedding) or a
    node with a subgraph raises :class:`NotProvable`. The embedding is the only input, of
    ``dtype`` and unknown shape; the nodes keep the written graph's order (a topological one).
    """
    index = GraphIndex(written)
    needed_nodes: set[int] = set()
    needed_init: set[str] = set()
    position = {id(node): i for i, node in enumerate(written.graph.node)}
    stack, seen = list(targets), {embedding}
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in index.initializers:
            needed_init.add(name)
            continue
        node = index.producer(name)
        if node is None:
            raise NotProvable(f"the head's outputs depend on graph input '{name}', not only on the embedding")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise NotProvable(f"node '{node_label(node)}' after the embedding holds a subgraph")
        needed_nodes.add(position[id(node)])
        stack.extend(node.input)
    nodes = [written.graph.node[i] for i in sorted(needed_nodes)]
    outputs = {o.name: o for o in written.graph.output}
    graph = onnx.helper.make_graph(
        nodes,
        "ntonnx_head",
        [onnx.helper.make_tensor_value_info(embedding, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)],
        [outputs[name] if name in outputs else onnx.ValueInfoProto(name=name) for name in targets],
        initializer=[index.initializers[name] for name in sorted(needed_init)],
    )
    model = onnx.helper.make_model(graph, opset_imports=list(written.opset_import))
    model.ir_version = written.ir_version
    return model
