"""What ``evaluate`` scores when the graph has no head ntonnx can re-solve.

Measuring accuracy needs only the model's class scores, never the head's weights: a model whose
head is not linear, or whose weights are computed at run time, can still be evaluated. The scores
are read where the graph output's post-ops start (walking back through Softmax, Sigmoid, ZipMap,
Cast, ... as head location does), so a single-column output is a logit again (the prediction is
``logit > 0``, not ``probability > 0``) and a ZipMap's maps are the probability tensor before it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from ntonnx.errors import ModelError
from ntonnx.graph.heads.base import HeadSpec
from ntonnx.graph.heads.locate import locate_head
from ntonnx.graph.heads.postops import step_back
from ntonnx.graph.index import GraphIndex, attribute

logger = logging.getLogger("ntonnx")

#: ``HeadSpec.pattern`` of the stand-in head: no linear head, the output's scores as they are.
NO_HEAD = "none"


def locate_head_or_scores(
    model: onnx.ModelProto,
    *,
    output: str | None = None,
    head_node: str | None = None,
    embedding: str | None = None,
) -> HeadSpec:
    """The head of ``model`` or, when none is found and none was named, the output's scores.

    Used by ``evaluate``, which needs no head. The stand-in :class:`HeadSpec` has pattern
    :data:`NO_HEAD`, no weight or bias, and ``embedding == logits`` = the scores tensor of width
    ``n_classes``, so extraction and metrics work unchanged; it cannot be read or rewritten.
    A head the user named (``head_node``/``embedding``) that is not one is still an error.
    """
    try:
        return locate_head(model, output=output, head_node=head_node, embedding=embedding)
    except ModelError as exc:
        if head_node is not None or embedding is not None:
            raise
        spec = output_scores(model, output)
        logger.warning(
            "%s; evaluating output '%s' by the argmax of '%s' instead",
            str(exc).split("; candidates")[0],
            spec.output,
            spec.logits,
        )
        return spec


def output_scores(model: onnx.ModelProto, output: str | None = None) -> HeadSpec:
    """The stand-in head scoring graph output ``output`` (the only tensor output when None)."""
    index = GraphIndex(model)
    if output is None:
        scored = [o.name for o in model.graph.output if _is_float(o) or _after_zipmap(index, o.name)]
        if len(scored) != 1:
            raise ModelError(
                f"no linear head, and {'no' if not scored else 'several'} graph outputs hold class scores "
                f"({scored or [o.name for o in model.graph.output]}); pass --output NAME"
            )
        output = scored[0]
    tensor, post_ops, labelled = output, [], None
    node = index.producer(tensor)
    while node is not None and (step := step_back(index, node)) is not None:
        post_ops.insert(0, step[0])
        if node.op_type == "ZipMap":  # its class labels say how many scores each sample has
            labelled = len(attribute(node, "classlabels_int64s", []) or attribute(node, "classlabels_strings", []))
        tensor = step[1]
        node = index.producer(tensor)
    value = _value_info(model, tensor)
    n_classes = _width(value) or labelled
    if not n_classes:
        raise ModelError(
            f"no linear head, and the number of classes of output '{output}' is not declared "
            f"(shape of '{tensor}' unknown); pass --output NAME of an output with a declared shape"
        )
    return HeadSpec(
        pattern=NO_HEAD,
        nodes=[],
        embedding=tensor,
        dim=n_classes,
        logits=tensor,
        n_classes=n_classes,
        output=output,
        weight=None,
        bias=None,
        dtype=_dtype(value),
        post_ops=post_ops,
    )


def _is_float(value: onnx.ValueInfoProto) -> bool:
    elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
    return bool(elem) and np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).kind == "f"


def _after_zipmap(index: GraphIndex, tensor: str) -> bool:
    producer = index.producer(tensor)
    return producer is not None and producer.op_type == "ZipMap"


def _value_info(model: onnx.ModelProto, tensor: str) -> onnx.ValueInfoProto | None:
    """The declared type of ``tensor``, running shape inference when the graph does not say."""
    for value in [*model.graph.output, *model.graph.value_info]:
        if value.name == tensor and value.type.tensor_type.shape.dim:
            return value
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model over 2 GB or an op onnx cannot infer: the shape stays unknown
        return None
    return next((v for v in inferred.graph.value_info if v.name == tensor), None)


def _width(value: onnx.ValueInfoProto | None) -> int | None:
    """Scores per sample (the product of the non-batch dims), None when not static."""
    if value is None:
        return None
    dims = value.type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        return None
    return int(np.prod([d.dim_value for d in dims]))


def _dtype(value: onnx.ValueInfoProto | None) -> str:
    elem = value.type.tensor_type.elem_type if value is not None else 0
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name if elem else "float32"
