"""A classifier whose embedding is its inputs, so extraction shows exactly what was fed to it.

``passthrough_classifier`` casts every input to float, flattens it and concatenates them into the
embedding, then applies a Gemm head: the embeddings ``ntonnx.extract`` returns are the tensors the
data reader produced, which the data tests compare with a direct NumPy/Pillow computation.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17


def passthrough_classifier(
    inputs: list[tuple[str, type, list]], n_classes: int = 3, seed: int = 0, dim: int | None = None
) -> onnx.ModelProto:
    """A model over ``inputs`` (name, numpy dtype, shape with a free batch dim first).

    ``dim`` is the embedding width when the inputs have free dims besides the batch.
    """
    nodes, parts, graph_inputs = [], [], []
    for name, dtype, shape in inputs:
        graph_inputs.append(
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)
        )
        source = name
        if np.dtype(dtype) != np.float32:
            nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=onnx.TensorProto.FLOAT))
            source = f"{name}_f"
        nodes.append(helper.make_node("Flatten", [source], [f"{name}_flat"], axis=1))
        parts.append(f"{name}_flat")
    nodes.append(helper.make_node("Concat", parts, ["embedding"], axis=1))
    dim = dim or sum(math.prod(shape[1:]) for _, _, shape in inputs)
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_classes, dim)).astype(np.float32)
    b = rng.normal(size=(n_classes,)).astype(np.float32)
    nodes.append(helper.make_node("Gemm", ["embedding", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes,
        "passthrough",
        graph_inputs,
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", n_classes])],
        [numpy_helper.from_array(W, "fc.weight"), numpy_helper.from_array(b, "fc.bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)
