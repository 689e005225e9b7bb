"""What every head pattern produces: a :class:`HeadSpec`, and the weight I/O shared by the patterns.

A pattern module only has to *match* its node shape and say where the weight and bias live and in
which layout (:class:`~ntonnx.graph.heads.params.WeightRef`). Reading them as a float64
``(n_classes, dim)`` matrix and writing a re-solved one back, in the stored dtype and layout, is
the same for most patterns (:func:`read_params`, :func:`write_params`); a pattern whose head
cannot hold new weights as it is (a dynamically quantized one) rebuilds it in its own ``write``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import onnx

from ntonnx.errors import ModelError
from ntonnx.graph.heads.params import WeightRef, quant_scale, read_param, stored_dtype, write_param
from ntonnx.graph.heads.pooling import Pooling
from ntonnx.graph.index import GraphIndex, node_label


@dataclass(frozen=True)
class HeadSpec:
    """The located head ``logits = pool(embedding) @ W.T + b`` and what follows it.

    Attributes
    ----------
    pattern : name of the matching pattern (``"gemm"``, ``"matmul_add"``, ``"matmul"``,
        ``"conv1x1"``, ``"matmul_integer"``, ``"linear_classifier"``).
    nodes : labels of the nodes forming the head, input side first.
    embedding : name of the head's input tensor: ``(batch, dim)``, or of higher rank when
        ``pooling`` reduces it to that.
    dim : embedding width.
    logits : name of the tensor holding the head's scores, ``(batch, n_classes)`` once flattened.
    n_classes : number of logits (1 for a single-logit binary head).
    output : the graph output the head feeds.
    weight, bias : where the parameters live; ``bias`` is None for a head without one, both are
        None for the stand-in ``evaluate`` scores when the graph has no head
        (pattern ``"none"``, :mod:`ntonnx.graph.heads.scores`).
    dtype : numpy dtype name of the stored weight (``float16``, ``int8`` for a quantized one).
    post_ops : what lies between ``logits`` and ``output`` (e.g. ``["Softmax"]``).
    pooling : the per-position reduction between the linear node and ``logits`` (CLS-token
        ``Gather``, mean over tokens, global average pool), applied to the embedding too.
    inner_post_ops : post-ops the head node applies itself (an ``ai.onnx.ml`` LinearClassifier's
        ``post_transform``, e.g. ``["Softmax"]``). When not empty, ``logits`` holds them applied
        and the raw logits are no tensor of the graph: they are computed as ``embedding @ W.T + b``
        (:attr:`logits_computed`).
    """

    pattern: str
    nodes: list[str]
    embedding: str
    dim: int
    logits: str
    n_classes: int
    output: str
    weight: WeightRef | None
    bias: WeightRef | None
    dtype: str
    post_ops: list[str] = field(default_factory=list)
    pooling: Pooling | None = None
    inner_post_ops: list[str] = field(default_factory=list)

    @property
    def has_bias(self) -> bool:
        return self.bias is not None

    @property
    def logits_computed(self) -> bool:
        """True when the graph holds no raw logits: extraction computes them from the embedding."""
        return bool(self.inner_post_ops)

    @property
    def quantized(self) -> bool:
        """True when the stored weight is integer (requantized on write)."""
        return np.dtype(self.dtype).kind in "iu"

    def to_dict(self) -> dict:
        return asdict(self)


def linear_head(
    pattern: str,
    index: GraphIndex,
    nodes: list[onnx.NodeProto],
    *,
    embedding: str,
    logits: str,
    dim: int,
    n_classes: int,
    weight: WeightRef,
    bias: WeightRef | None,
    **extra,
) -> HeadSpec:
    """The head formed by ``nodes``, reading ``embedding`` and writing ``logits`` (also its output, until
    post-ops are attached)."""
    return HeadSpec(
        pattern=pattern,
        nodes=[node_label(node) for node in nodes],
        embedding=embedding,
        dim=int(dim),
        logits=logits,
        n_classes=int(n_classes),
        output=logits,
        weight=weight,
        bias=bias,
        dtype=stored_dtype(index, weight),
        **extra,
    )


def single_node_head(pattern: str, index: GraphIndex, node: onnx.NodeProto, **fields) -> HeadSpec:
    """The head formed by one node reading the embedding as input 0 and writing the logits as output 0."""
    return linear_head(pattern, index, [node], embedding=node.input[0], logits=node.output[0], **fields)


class HeadPattern(Protocol):
    """One graph shape a linear head can take; modules in ``ntonnx.graph.heads`` implement it."""

    name: str

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        """Return the head if ``node`` (the one producing the logits) is this pattern."""

    def read(self, model: onnx.ModelProto, spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
        """The effective ``W`` (n_classes, dim) and ``b`` (n_classes,) of the head, float64."""

    def write(self, model: onnx.ModelProto, spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> None:
        """Make the head compute ``pool(embedding) @ W.T + b``; edits ``model`` in place."""


class ParamHead:
    """Read/write for heads whose parameters are (chains to) constants: all but rebuilt ones."""

    name = "param"

    def read(self, model: onnx.ModelProto, spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
        return read_params(model, spec)

    def write(self, model: onnx.ModelProto, spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> None:
        write_params(model, spec, W, b)


def read_params(model: onnx.ModelProto, spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
    """The head's effective ``W`` of shape ``(n_classes, dim)`` and ``b`` of shape ``(n_classes,)``."""
    index = GraphIndex(model)
    W = _param(index, spec.weight).astype(np.float64).reshape(_read_shape(spec))
    if spec.weight.layout == "in_out":
        W = W.T
    W = W * spec.weight.scale
    b = np.zeros(spec.n_classes)
    if spec.bias is not None:
        raw = _param(index, spec.bias).astype(np.float64).ravel()
        b = np.broadcast_to(raw, (spec.n_classes,)) * spec.bias.scale
    return W, np.array(b)


def write_params(model: onnx.ModelProto, spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> None:
    """Store ``W`` (n_classes, dim) and ``b`` (n_classes,) into ``model`` in place.

    Values are converted to the stored dtype and layout and divided by the graph's scale, so the
    head computes exactly ``embedding @ W.T + b`` (up to the dtype's rounding or quantization).
    A head without a bias must be given ``b == 0``: adding one would change the graph.
    """
    W, b = checked_solution(spec, W, b)
    index = GraphIndex(model)
    stored = W / spec.weight.scale
    if spec.weight.layout == "in_out":
        stored = stored.T
    old_w_scale = quant_scale(index, spec.weight)
    write_param(model, spec.weight, stored.reshape(_param(index, spec.weight).shape))
    if spec.bias is not None:
        index = GraphIndex(model)
        write_bias(model, spec, b, int32_scale=_int32_bias_scale(index, spec, old_w_scale))


def write_bias(model: onnx.ModelProto, spec: HeadSpec, b: np.ndarray, *, int32_scale=None) -> None:
    """Store bias ``b`` (n_classes,) in the shape its constant has (or ``(n_classes,)`` if it was a scalar)."""
    old_bias = _param(GraphIndex(model), spec.bias)
    shape = old_bias.shape if old_bias.size == spec.n_classes else (spec.n_classes,)
    write_param(model, spec.bias, (np.asarray(b, np.float64) / spec.bias.scale).reshape(shape), int32_scale=int32_scale)


def checked_solution(spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``W`` and ``b`` as float64, checked against the head's shape (and zero bias when it has none)."""
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if W.shape != (spec.n_classes, spec.dim):
        raise ValueError(f"new weight has shape {W.shape}, head needs {(spec.n_classes, spec.dim)}")
    if b.shape != (spec.n_classes,):
        raise ValueError(f"new bias has shape {b.shape}, head needs {(spec.n_classes,)}")
    if spec.bias is None and np.any(b != 0):
        raise ValueError("head has no bias input; the re-solved bias must be zero")
    return W, b


def _int32_bias_scale(index: GraphIndex, spec: HeadSpec, old_w_scale: np.ndarray | None) -> np.ndarray | None:
    """A QDQ bias's scale is input scale x weight scale; keep that product when the weight's changed."""
    old_b_scale = quant_scale(index, spec.bias)
    new_w_scale = quant_scale(index, spec.weight)
    if old_b_scale is None or old_w_scale is None or index.constant(spec.bias.tensor).dtype != np.int32:
        return None
    ratio = new_w_scale.reshape(-1) / old_w_scale.reshape(-1)
    if old_b_scale.size == 1 and ratio.size > 1:
        return None  # a per-tensor bias scale cannot follow per-channel weight scales: fit its own
    return old_b_scale.reshape(-1) * ratio


def _param(index: GraphIndex, ref: WeightRef) -> np.ndarray:
    head = index.producer(ref.consumer)
    if head is None:
        raise ModelError(f"head parameter '{ref.tensor}': no node produces '{ref.consumer}' any more")
    return read_param(index, ref)


def _read_shape(spec: HeadSpec) -> tuple[int, int]:
    if spec.weight.layout == "in_out":
        return (spec.dim, spec.n_classes)
    return (spec.n_classes, spec.dim)


def head_activations(spec: HeadSpec, embedding: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``(N, dim)`` embeddings and ``(N, n_classes)`` logits from the raw tensors the graph computes.

    Applies the head's pooling to the embedding tensor; raises a :class:`ModelError` naming the
    tensor when the shapes are not those of a per-sample classifier head (e.g. a head applied to
    every token with no pooling after it). For a head whose logits are computed, ``logits`` are
    the node's transformed scores, returned as ``(N, -1)``.
    """
    n = len(embedding)
    rows = spec.pooling.apply(embedding) if spec.pooling is not None else embedding
    if rows.ndim > 2 and all(s == 1 for s in rows.shape[2:]):
        rows = rows.reshape(n, -1)
    if rows.shape != (n, spec.dim):
        where = f"after {spec.pooling.kind} pooling " if spec.pooling is not None else ""
        raise ModelError(
            f"embedding '{spec.embedding}' has shape {embedding.shape} ({where}{rows.shape}), expected "
            f"(batch, {spec.dim}); a head applied per token or per pixel needs a Gather/ReduceMean/"
            "GlobalAveragePool after it to be a classifier head (pass --head-node to choose another)"
        )
    if spec.logits_computed and logits.ndim and len(logits) == n:
        return rows, logits.reshape(n, -1)
    if logits.size != n * spec.n_classes:
        raise ModelError(
            f"logits '{spec.logits}' have shape {logits.shape}, expected (batch, {spec.n_classes}); "
            "the head is not applied once per sample"
        )
    return rows, logits.reshape(n, spec.n_classes)
