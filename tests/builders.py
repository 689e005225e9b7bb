"""Tiny classifiers built with onnx.helper, and data for them, shared by the tests.

The model is ``x -> Relu(x @ A) -> head -> [post-op]``: a fixed random "backbone" giving a
non-negative embedding, then a head in one of the layouts real exporters produce.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17


def tiny_classifier(
    *,
    in_dim: int = 6,
    dim: int = 8,
    n_classes: int = 3,
    head: str = "gemm_transB1",
    bias_side: str = "right",
    post_op: str | None = None,
    batch: int | str = "N",
    seed: int = 0,
    dtype=np.float32,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A model with a head of the given layout; returns it and its true parameters.

    ``head`` is ``gemm_transB1``, ``gemm_transB0``, ``matmul_add`` or ``matmul``.
    """
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(in_dim, dim)).astype(dtype)
    W = rng.normal(size=(n_classes, dim)).astype(dtype)
    b = rng.normal(size=(n_classes,)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(A, "backbone.weight")]
    nodes = [
        helper.make_node("MatMul", ["x", "backbone.weight"], ["pre"], name="backbone"),
        helper.make_node("Relu", ["pre"], ["embedding"], name="relu"),
    ]
    head_out = "logits" if post_op is None else "head_out"
    if head == "gemm_transB1":
        inits += [numpy_helper.from_array(W, "fc.weight"), numpy_helper.from_array(b, "fc.bias")]
        nodes.append(helper.make_node("Gemm", ["embedding", "fc.weight", "fc.bias"], [head_out], name="fc", transB=1))
    elif head == "gemm_transB0":
        inits += [numpy_helper.from_array(W.T.copy(), "fc.weight"), numpy_helper.from_array(b, "fc.bias")]
        nodes.append(helper.make_node("Gemm", ["embedding", "fc.weight", "fc.bias"], [head_out], name="fc", transB=0))
    elif head in ("matmul_add", "matmul"):
        inits.append(numpy_helper.from_array(W.T.copy(), "fc.weight"))
        mm_out = head_out if head == "matmul" else "fc_mm"
        nodes.append(helper.make_node("MatMul", ["embedding", "fc.weight"], [mm_out], name="fc_matmul"))
        if head == "matmul_add":
            inits.append(numpy_helper.from_array(b, "fc.bias"))
            pair = ["fc_mm", "fc.bias"] if bias_side == "right" else ["fc.bias", "fc_mm"]
            nodes.append(helper.make_node("Add", pair, [head_out], name="fc_add"))
        else:
            b = np.zeros_like(b)
    else:
        raise ValueError(head)
    if post_op is not None:
        nodes.append(helper.make_node(post_op, [head_out], ["logits"], name="post"))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", elem, [batch, in_dim])],
        [helper.make_tensor_value_info("logits", elem, [batch, n_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = 8
    helper.set_model_props(model, {"author": "tests"})
    onnx.checker.check_model(model)
    return model, {"A": A, "W": W, "b": b}


def tiny_data(model_params: dict[str, np.ndarray], n: int = 200, seed: int = 1, groups: bool = True):
    """Inputs labelled by the model's own head plus noise, so some samples are misclassified."""
    rng = np.random.default_rng(seed)
    A, W, b = model_params["A"], model_params["W"], model_params["b"]
    x = rng.normal(size=(n, A.shape[0])).astype(A.dtype)
    logits = np.maximum(x @ A, 0) @ W.T + b
    noisy = logits + rng.normal(scale=2.0, size=logits.shape)
    labels = noisy.argmax(axis=1) if W.shape[0] > 1 else (noisy[:, 0] > 0).astype(np.int64)
    arrays = {"x": x, "labels": labels.astype(np.int64)}
    if groups:
        arrays["groups"] = (2 * labels + (x[:, 0] > 0)).astype(np.int64)
    return arrays
