"""Reductions after a head applied per position, which the head commutes with.

A linear head applied to every token (``(N, T, d) -> (N, T, C)``) then a pick of one token
(``Gather``, the CLS token) or a mean over tokens (``ReduceMean``), or a 1x1 ``Conv`` classifier
then a global average pool, computes ``pool(e) @ W.T + b``: the same head on the pooled embedding.
So the embedding ntonnx works with is ``pool(e)``, computed in NumPy from the tensor the head
reads, and the weights are rewritten in place. Sums and max pools do not commute (a sum scales
the bias; a max picks different positions per class), so they are not accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx

from ntonnx.graph.index import GraphIndex, attribute


@dataclass(frozen=True)
class Pooling:
    """How the head's input maps to the ``(batch, dim)`` embedding the head is linear in.

    Attributes
    ----------
    kind : ``"take"`` one position along ``axes[0]`` (``index``), ``"mean"`` over ``axes``, or
        ``"spatial_mean"`` over every axis after the channel axis (NCHW global average pool).
    axes : axes of the head's input (negative counts from the end, as ONNX allows).
    index : the position ``"take"`` selects (negative counts from the end).
    """

    kind: Literal["take", "mean", "spatial_mean"]
    axes: tuple[int, ...] = ()
    index: int = 0

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Reduce ``array`` (the head's input, batch first) the way the graph reduces the logits."""
        if self.kind == "take":
            return np.take(array, self.index, axis=self.axes[0])
        axes = tuple(range(2, array.ndim)) if self.kind == "spatial_mean" else self.axes
        return array.astype(np.float64).mean(axis=axes).astype(array.dtype)


def match_pooling(index: GraphIndex, node: onnx.NodeProto) -> Pooling | None:
    """The :class:`Pooling` ``node`` performs on its first input, or None if it is not one."""
    if node.op_type == "GlobalAveragePool":
        return Pooling("spatial_mean")
    if node.op_type == "Gather":
        indices = index.constant(node.input[1])
        axis = int(attribute(node, "axis", 0))
        if indices is None or indices.size != 1 or indices.ndim > 1 or axis == 0:
            return None
        return Pooling("take", (axis,), int(indices.reshape(())))
    if node.op_type == "ReduceMean":
        axes = _reduce_axes(index, node)
        if not axes or 0 in axes:
            return None
        return Pooling("mean", axes)
    return None


def _reduce_axes(index: GraphIndex, node: onnx.NodeProto) -> tuple[int, ...]:
    """ReduceMean's axes: an attribute before opset 18, an optional constant input since."""
    axes = attribute(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = index.constant(node.input[1])
        if value is None:
            return ()
        axes = value.reshape(-1).tolist()
    return tuple(int(a) for a in axes or ())


def conv_compatible(pooling: Pooling, rank: int) -> bool:
    """Whether ``pooling`` of a rank-``rank`` conv output averages every spatial axis (and only those)."""
    if pooling.kind == "spatial_mean":
        return True
    return pooling.kind == "mean" and sorted(a % rank for a in pooling.axes) == list(range(2, rank))
