"""``ai.onnx.ml`` ``LinearClassifier``: skl2onnx's LogisticRegression, LinearSVC, SGDClassifier, ...

The node computes ``z = X @ C.T + b`` with ``C`` (``coefficients``, ``(n_classes, dim)`` row-major)
and ``b`` (``intercepts``) stored as node attributes, applies its ``post_transform`` (NONE,
SOFTMAX, LOGISTIC) and writes the label (argmax) and the transformed scores. The embedding is the
node's input ``X`` (the features, or a Scaler's output in a Pipeline); the logits are ``z``.
Rewriting sets the two attributes; ``post_transform``, ``multi_class`` and the class labels stay,
so the label output follows the new head.

The scores output holds ``post_transform(z)``, not ``z``: the raw logits are no tensor of the graph,
so the head declares the transform as its :attr:`~HeadSpec.inner_post_ops` and extraction
computes ``z`` from the embedding. A binary model exported with two tied rows (``C = [-w, w]``,
``b = [-c, c]``, skl2onnx's LogisticRegression and LinearSVC) is a single-logit head ``z = X @ w + c``,
re-solved as one and written back tied, so its two scores stay ``[1 - p, p]`` (or ``[-z, z]``).
"""

from __future__ import annotations

import numpy as np
import onnx

from ntonnx.graph.heads.base import HeadSpec, checked_solution
from ntonnx.graph.heads.params import WeightRef
from ntonnx.graph.heads.postops import BINARY_PROBA, BINARY_SCORES
from ntonnx.graph.index import GraphIndex, attribute, node_label

DOMAIN = "ai.onnx.ml"
#: post_transform -> what it applies to ``z``, for untied and for tied binary rows.
_TRANSFORMS = {
    "NONE": ([], [BINARY_SCORES]),
    "SOFTMAX": (["Softmax"], None),
    "LOGISTIC": (["Sigmoid"], ["Sigmoid", BINARY_PROBA]),
}


class _LinearClassifier:
    name = "linear_classifier"

    def match(self, index: GraphIndex, node: onnx.NodeProto) -> HeadSpec | None:
        if node.op_type != "LinearClassifier" or node.domain != DOMAIN or len(node.output) < 2 or not node.output[1]:
            return None
        transform = attribute(node, "post_transform", b"NONE")
        transform = transform.decode() if isinstance(transform, bytes) else transform
        coefficients, intercepts = _attributes(node)
        rows = intercepts.size
        if transform not in _TRANSFORMS or rows < 2 or coefficients.size % rows or coefficients.size == 0:
            return None  # SOFTMAX_ZERO/PROBIT, or a single row (onnxruntime pads it to two scores its own way)
        W = coefficients.reshape(rows, -1)
        inner, tied_inner = _TRANSFORMS[transform]
        tied = rows == 2 and tied_inner is not None and _tied(W, intercepts)
        label = node_label(node)
        return HeadSpec(
            pattern=self.name,
            nodes=[label],
            embedding=node.input[0],
            dim=W.shape[1],
            logits=node.output[1],
            n_classes=1 if tied else rows,
            output=node.output[1],
            weight=WeightRef(tensor=f"{label}.coefficients", layout="out_in", consumer=node.output[1], input_index=-1),
            bias=WeightRef(tensor=f"{label}.intercepts", layout="vector", consumer=node.output[1], input_index=-1),
            dtype="float32",
            inner_post_ops=list(tied_inner if tied else inner),
        )

    def read(self, model: onnx.ModelProto, spec: HeadSpec) -> tuple[np.ndarray, np.ndarray]:
        coefficients, intercepts = _attributes(GraphIndex(model).producer(spec.weight.consumer))
        W = coefficients.reshape(intercepts.size, -1)
        return (W[1:], intercepts[1:]) if spec.n_classes == 1 else (W, intercepts)

    def write(self, model: onnx.ModelProto, spec: HeadSpec, W: np.ndarray, b: np.ndarray) -> None:
        W, b = checked_solution(spec, W, b)
        if spec.n_classes == 1:  # tied binary rows: class 0 scores -z
            W, b = np.vstack([-W, W]), np.concatenate([-b, b])
        node = GraphIndex(model).producer(spec.weight.consumer)
        kept = [a for a in node.attribute if a.name not in ("coefficients", "intercepts")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(onnx.helper.make_attribute("coefficients", W.astype(np.float32).ravel().tolist()))
        node.attribute.append(onnx.helper.make_attribute("intercepts", b.astype(np.float32).tolist()))


def _attributes(node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
    """``coefficients`` (flat) and ``intercepts`` as float64 (the float32 values onnxruntime uses)."""
    coefficients = np.asarray(attribute(node, "coefficients", []), np.float32).astype(np.float64)
    intercepts = np.asarray(attribute(node, "intercepts", []), np.float32).astype(np.float64)
    return coefficients, intercepts


def _tied(W: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(W[0], -W[1]) and b[0] == -b[1])


linear_classifier = _LinearClassifier()
