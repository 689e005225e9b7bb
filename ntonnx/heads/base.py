"""What every head pattern produces: a :class:`HeadSpec`, and the weight I/O shared by all.

A pattern module only has to *match* its node shape and say where the weight and bias live and in
which layout (:class:`WeightRef`). Reading them as a float64 ``(n_classes, dim)`` matrix and
writing a re-solved one back, in the stored dtype and layout, is the same for every pattern.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

import numpy as np
import onnx

from ntonnx.errors import ModelError
from ntonnx.graph import GraphIndex, replace_constant


@dataclass(frozen=True)
class WeightRef:
    """Where one head parameter lives.

    ``layout`` ``"out_in"`` stores the weight as ``(n_classes, dim)`` (Gemm ``transB=1``, torch's
    Linear), ``"in_out"`` as ``(dim, n_classes)`` (Gemm ``transB=0``, MatMul). ``scale`` is a
    factor the graph applies to the stored value (Gemm's ``alpha``/``beta``). ``consumer`` is the
    output tensor of the node that reads the parameter, to find it again in a copy of the model.
    """

    tensor: str
    layout: Literal["out_in", "in_out", "vector"]
    consumer: str
    scale: float = 1.0


@dataclass(frozen=True)
class HeadSpec:
    """The located head ``logits = embedding @ W.T + b`` and what follows it.

    Attributes
    ----------
    pattern : name of the matching pattern (``"gemm"``, ``"matmul_add"``, ``"matmul"``).
    nodes : labels of the nodes forming the head, input side first.
    embedding : name of the head's input tensor, shape ``(batch, dim)``.
    dim : embedding width.
    logits : name of the head's output tensor, shape ``(batch, n_classes)``.
    n_classes : number of logits (1 for a single-logit binary head).
    output : the graph output the head feeds.
    post_ops : op types between ``logits`` and ``output`` (e.g. ``["Softmax"]``).
    weight, bias : where the parameters live; ``bias`` is None for a head without one.
    dtype : numpy dtype name of the stored weight.
    """

    pattern: str
    nodes: list[str]
    embedding: str
    dim: int
    logits: str
    n_classes: int
    output: str
    weight: WeightRef
    bias: WeightRef | None
    dtype: str
    post_ops: list[str] = field(default_factory=list)

    @property
    def has_bias(self) -> bool:
        return self.bias is not None

    def to_dict(self) -> dict:
        return asdict(self)


class HeadPattern(Protocol):
    """One graph shape a linear head can take; modules in ``ntonnx.heads`` implement it."""

    name: str

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        """Return the head if ``node`` (the one producing the logits) is this pattern."""


def read_head(model: onnx.ModelProto, spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
    """The head's effective ``W`` of shape ``(n_classes, dim)`` and ``b`` of shape ``(n_classes,)``."""
    index = GraphIndex(model)
    weight = _constant(index, spec.weight.tensor)
    W = weight.astype(np.float64).reshape(_stored_2d_shape(spec))
    if spec.weight.layout == "in_out":
        W = W.T
    W = W * spec.weight.scale
    b = np.zeros(spec.n_classes)
    if spec.bias is not None:
        raw = _constant(index, spec.bias.tensor).astype(np.float64).ravel()
        b = np.broadcast_to(raw, (spec.n_classes,)) * spec.bias.scale
    return W, np.array(b)


def write_head(model: onnx.ModelProto, spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> None:
    """Store ``W`` (n_classes, dim) and ``b`` (n_classes,) into ``model`` in place.

    Values are converted to the stored dtype and layout and divided by the graph's scale, so the
    head computes exactly ``embedding @ W.T + b`` (up to the dtype's rounding). A head without a
    bias must be given ``b == 0``: adding one would change the graph.
    """
    index = GraphIndex(model)
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if W.shape != (spec.n_classes, spec.dim):
        raise ValueError(f"new weight has shape {W.shape}, head needs {(spec.n_classes, spec.dim)}")
    stored = W / spec.weight.scale
    if spec.weight.layout == "in_out":
        stored = stored.T
    original = _constant(index, spec.weight.tensor)
    _replace(model, index, spec.weight, stored.reshape(original.shape))
    if spec.bias is None:
        if np.any(b != 0):
            raise ValueError("head has no bias input; the re-solved bias must be zero")
        return
    old_bias = _constant(index, spec.bias.tensor)
    bias_shape = old_bias.shape if old_bias.size == spec.n_classes else (spec.n_classes,)
    _replace(model, GraphIndex(model), spec.bias, (b / spec.bias.scale).reshape(bias_shape))


def _replace(model: onnx.ModelProto, index: GraphIndex, ref: WeightRef, value: np.ndarray) -> None:
    owner = index.producer(ref.consumer)
    replace_constant(model, ref.tensor, value, owner)


def _constant(index: GraphIndex, tensor: str) -> np.ndarray:
    value = index.constant(tensor)
    if value is None:
        raise ModelError(f"head parameter '{tensor}' is not a constant in the graph")
    return value


def _stored_2d_shape(spec: HeadSpec) -> tuple[int, int]:
    if spec.weight.layout == "in_out":
        return (spec.dim, spec.n_classes)
    return (spec.n_classes, spec.dim)
