"""The ops exporters put between a head's logits and the graph output, and what they compute.

None of them changes which class wins, so the head is found by walking back through them and the
metrics are computed on the logits themselves, whatever the model outputs (probabilities,
log-probabilities or logits). :func:`apply_post_ops` recomputes the output from logits in NumPy,
which verification compares with the rewritten model's own output.
"""

from __future__ import annotations

import numpy as np
import onnx

from ntonnx.graph.index import GraphIndex, attribute

#: Ops that map ``(N, C)`` scores to ``(N, C)`` scores (or a reshaping of them) keeping the winner.
ELEMENTWISE_POST_OPS = frozenset({"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Cast"})
RESHAPE_POST_OPS = frozenset({"Flatten", "Reshape", "Squeeze"})
#: skl2onnx's binary probabilities: ``Concat(1 - sigmoid(z), sigmoid(z))``.
BINARY_PROBA = "BinaryProba"
#: A QDQ model's fake-quantization of the logits (``QuantizeLinear -> DequantizeLinear``).
QDQ = "QuantizeDequantize"
#: skl2onnx's ``ZipMap`` (probabilities as a list of {class: p} maps).
ZIPMAP = "ZipMap"
#: ``ai.onnx.ml`` ``Normalizer`` rescaling each row by a positive number (its L1 or L2 norm).
NORMALIZE_L1, NORMALIZE_L2 = "NormalizeL1", "NormalizeL2"
#: A binary ``LinearClassifier``'s scores ``[-z, z]`` (its two coefficient rows tied, post_transform NONE).
BINARY_SCORES = "BinaryScores"
#: ``ArrayFeatureExtractor`` picking column 1 of a binary pair (``[-z, z]`` or ``[1 - p, p]``).
POSITIVE_COLUMN = "PositiveColumn"
POST_OPS = ELEMENTWISE_POST_OPS | RESHAPE_POST_OPS | {BINARY_PROBA, QDQ, ZIPMAP, NORMALIZE_L1, NORMALIZE_L2}
POST_OPS |= {POSITIVE_COLUMN}
#: Post-ops after which :data:`POSITIVE_COLUMN` keeps the winner (it needs the pair's symmetry).
BINARY_PAIRS = frozenset({BINARY_PROBA, BINARY_SCORES})


def step_back(index: GraphIndex, node: onnx.NodeProto) -> tuple[str, str] | None:
    """If ``node`` is a post-op, its name and the tensor it reads the scores from; else None."""
    op = node.op_type
    if op in ("Softmax", "LogSoftmax") and attribute(node, "axis", -1) not in (1, -1):
        return None
    if op == "Cast" and not _to_float(node):
        return None  # truncating scores to integers (or booleans) can change the winner
    if op in ELEMENTWISE_POST_OPS or op in RESHAPE_POST_OPS or op == ZIPMAP:
        return op, node.input[0]
    if op == "DequantizeLinear":
        quantize = index.producer(node.input[0])
        if quantize is not None and quantize.op_type == "QuantizeLinear":
            return QDQ, quantize.input[0]
    if op == "Concat" and len(node.input) == 2 and attribute(node, "axis", 0) in (1, -1):
        return _binary_proba(index, node)
    if op == "Normalizer" and node.domain == "ai.onnx.ml":
        norm = attribute(node, "norm", b"MAX")
        norm = norm.decode() if isinstance(norm, bytes) else norm
        return ({"L1": NORMALIZE_L1, "L2": NORMALIZE_L2}[norm], node.input[0]) if norm in ("L1", "L2") else None
    if op == "ArrayFeatureExtractor" and node.domain == "ai.onnx.ml":
        picked = index.constant(node.input[1])
        if picked is not None and picked.size == 1 and int(picked.reshape(())) == 1:
            return POSITIVE_COLUMN, node.input[0]
    return None


def steps_forward(index: GraphIndex, tensor: str) -> list[tuple[str, str]]:
    """Each post-op reading the scores ``tensor``: its name and the tensor it produces."""
    steps = []
    for node in index.consumers.get(tensor, []):
        if node.op_type == "QuantizeLinear":
            steps += [
                (QDQ, n.output[0]) for n in index.consumers.get(node.output[0], []) if n.op_type == "DequantizeLinear"
            ]
            continue
        found = step_back(index, node)
        if found is not None and found[1] == tensor:
            steps.append((found[0], node.output[0]))
    return steps


def _to_float(cast: onnx.NodeProto) -> bool:
    """Whether a Cast converts to a floating-point type (same-type Casts are no-ops; others only round)."""
    to = attribute(cast, "to", 0)
    name = onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() else ""
    return name.startswith(("FLOAT", "BFLOAT")) or name == "DOUBLE"


def _binary_proba(index: GraphIndex, concat: onnx.NodeProto) -> tuple[str, str] | None:
    negative = index.producer(concat.input[0])
    positive = concat.input[1]
    if negative is None or negative.op_type != "Sub" or negative.input[1] != positive:
        return None
    one = index.constant(negative.input[0])
    if one is None or one.size != 1 or float(one.reshape(())) != 1.0:
        return None
    return BINARY_PROBA, positive


def apply_post_ops(logits: np.ndarray, post_ops: list[str]) -> np.ndarray | None:
    """What the graph outputs for head ``logits`` of shape (n_samples, n_classes), in float64.

    None when a post-op's numbers are not modelled here (ZipMap's maps, QDQ's rounding).
    """
    from scipy import special

    scores = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    for op in post_ops:
        if op == "Softmax":
            scores = special.softmax(scores, axis=1)
        elif op == "LogSoftmax":
            scores = special.log_softmax(scores, axis=1)
        elif op == "Sigmoid":
            scores = special.expit(scores)
        elif op == BINARY_PROBA:
            scores = np.hstack([1.0 - scores, scores])
        elif op == BINARY_SCORES:
            scores = np.hstack([-scores, scores])
        elif op == POSITIVE_COLUMN:
            scores = scores[:, 1:2]
        elif op == NORMALIZE_L1:
            scores = scores / np.abs(scores).sum(axis=1, keepdims=True)
        elif op == NORMALIZE_L2:
            scores = scores / np.sqrt((scores**2).sum(axis=1, keepdims=True))
        elif op in (QDQ, ZIPMAP):
            return None
    return scores
