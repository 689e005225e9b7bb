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


# ---------------------------------------------------------------------------------------------
# Head variants: every layout, storage and post-op ntonnx claims to handle, on the same backbone.

#: Head layouts :func:`head_model` builds (``_nobias`` variants drop the bias input).
LAYOUTS = (
    "gemm_transB1",
    "gemm_transB0",
    "gemm_nobias",
    "matmul_add",
    "matmul",
    "matmul_transposed",
    "conv1x1",
)
#: Where the head's weight is stored.
STORAGES = ("initializer", "constant", "graph_input", "cast_fp16", "qdq_per_channel", "shared")
#: Post-ops :func:`head_model` can append (each keeps (N, C) scores).
POST_OPS = ("Softmax", "LogSoftmax", "Sigmoid", "Identity", "Cast", "Flatten", "Reshape")


def head_model(
    *,
    layout: str = "gemm_transB1",
    storage: str = "initializer",
    bias_side: str = "right",
    post_ops: tuple[str, ...] = (),
    n_classes: int = 3,
    dim: int = 8,
    in_dim: int = 6,
    dtype=np.float32,
    alpha: float = 1.0,
    beta: float = 1.0,
    batch: int | str = "N",
    seed: int = 0,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``x -> Relu(x @ A) -> head -> post_ops`` with the head in ``layout``, weights in ``storage``.

    Returns the model and ``{"A", "W", "b"}``: the backbone and the head's *effective* weight
    ``(n_classes, dim)`` and bias ``(n_classes,)`` (zeros without a bias; alpha/beta and
    quantization already applied), so ``logits = relu(x @ A) @ W.T + b`` exactly.
    ``storage="shared"`` also exposes the stored weight as a second graph output ``aux``, which a
    rewrite of the head must leave unchanged.
    """
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(in_dim, dim)).astype(dtype)
    W = rng.normal(size=(n_classes, dim))
    b = rng.normal(size=(n_classes,))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    builder = _Builder(storage, dtype)
    builder.init(A, "backbone.weight", plain=True)
    builder.nodes += [
        helper.make_node("MatMul", ["x", "backbone.weight"], ["pre"], name="backbone"),
        helper.make_node("Relu", ["pre"], ["embedding"], name="relu"),
    ]
    head_out = "head_out" if post_ops else "logits"
    has_bias = layout not in ("gemm_nobias", "matmul")
    if layout.startswith("gemm"):
        trans_b = layout != "gemm_transB0"
        W_eff = builder.weight(W if trans_b else W.T, axis=0 if trans_b else 1)
        W = (W_eff if trans_b else W_eff.T) * alpha
        inputs = ["embedding", "fc.weight"]
        if has_bias:
            b = builder.init(b.astype(dtype), "fc.bias") * beta
            inputs.append("fc.bias")
        builder.nodes.append(
            helper.make_node("Gemm", inputs, [head_out], name="fc", transB=int(trans_b), alpha=alpha, beta=beta)
        )
    elif layout in ("matmul_add", "matmul", "matmul_transposed"):
        if layout == "matmul_transposed":  # stored (C, d), transposed in the graph (tf2onnx, tied weights)
            W = builder.weight(W, axis=0)
            transpose = helper.make_node("Transpose", ["fc.weight"], ["fc.weight_t"], name="fc_t", perm=[1, 0])
            builder.nodes.append(transpose)
            weight_tensor = "fc.weight_t"
        else:
            W = builder.weight(W.T, axis=1).T
            weight_tensor = "fc.weight"
        mm_out = head_out if layout == "matmul" else "fc_mm"
        builder.nodes.append(helper.make_node("MatMul", ["embedding", weight_tensor], [mm_out], name="fc_matmul"))
        if has_bias:
            b = builder.init(b.astype(dtype), "fc.bias")
            pair = ["fc_mm", "fc.bias"] if bias_side == "right" else ["fc.bias", "fc_mm"]
            builder.nodes.append(helper.make_node("Add", pair, [head_out], name="fc_add"))
    elif layout == "conv1x1":
        W = builder.weight(W.reshape(n_classes, dim, 1, 1), axis=0).reshape(n_classes, dim)
        b = builder.init(b.astype(dtype), "fc.bias")
        builder.init(np.array([-1, dim, 1, 1], dtype=np.int64), "to_nchw", plain=True)
        builder.nodes += [
            helper.make_node("Reshape", ["embedding", "to_nchw"], ["embedding_nchw"], name="to_map"),
            helper.make_node("Conv", ["embedding_nchw", "fc.weight", "fc.bias"], ["fc_map"], name="fc_conv"),
            helper.make_node("GlobalAveragePool", ["fc_map"], ["fc_pool"], name="pool"),
            helper.make_node("Flatten", ["fc_pool"], [head_out], name="flatten"),
        ]
    else:
        raise ValueError(layout)
    if not has_bias:
        b = np.zeros(n_classes)
    current = head_out
    for k, op in enumerate(post_ops):
        out = "logits" if k == len(post_ops) - 1 else f"post{k}"
        attrs = {"to": elem} if op == "Cast" else {}
        extra = []
        if op == "Reshape":
            builder.init(np.array([-1, n_classes], dtype=np.int64), f"post{k}_shape", plain=True)
            extra = [f"post{k}_shape"]
        builder.nodes.append(helper.make_node(op, [current, *extra], [out], name=f"post{k}", **attrs))
        current = out
    outputs = [helper.make_tensor_value_info("logits", elem, [batch, n_classes])]
    if storage == "shared":
        builder.nodes.append(helper.make_node("Identity", ["fc.weight"], ["aux"], name="aux"))
        outputs.append(helper.make_tensor_value_info("aux", elem, ["C", "D"]))
    graph = helper.make_graph(
        builder.nodes,
        "heads",
        [helper.make_tensor_value_info("x", elem, [batch, in_dim]), *builder.inputs],
        outputs,
        builder.initializers,
    )
    old_ir = storage == "graph_input"
    opset = 8 if old_ir else OPSET
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.producer_version = "1.0"
    model.ir_version = 3 if old_ir else 8
    helper.set_model_props(model, {"author": "tests", "license": "none"})
    onnx.checker.check_model(model)
    return model, {"A": A, "W": np.asarray(W, np.float64), "b": np.asarray(b, np.float64)}


class _Builder:
    """Collects initializers/Constant nodes for :func:`head_model` according to the storage."""

    def __init__(self, storage: str, dtype):
        self.storage = storage
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []

    def init(self, value: np.ndarray, name: str, plain: bool = False) -> np.ndarray:
        """Store ``value`` as ``name``: an initializer, or a Constant node for ``storage="constant"``."""
        if self.storage == "constant" and not plain:
            self.nodes.append(
                helper.make_node("Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(value))
            )
        else:
            self.initializers.append(numpy_helper.from_array(value, name))
            if self.storage == "graph_input":
                elem = helper.np_dtype_to_tensor_dtype(value.dtype)
                self.inputs.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
        return value.astype(np.float64)

    def weight(self, value: np.ndarray, axis: int) -> np.ndarray:
        """Store the head weight as ``fc.weight``; returns its effective (dequantized/cast) value."""
        if self.storage == "cast_fp16":
            stored = self.init(value.astype(np.float16), "fc.weight_fp16")
            to = helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))
            self.nodes.append(helper.make_node("Cast", ["fc.weight_fp16"], ["fc.weight"], name="fc_cast", to=to))
            return stored
        if self.storage == "qdq_per_channel":
            others = tuple(i for i in range(value.ndim) if i != axis)
            scale = np.abs(value).max(axis=others) / 127
            shape = [1] * value.ndim
            shape[axis] = -1
            quantized = np.clip(np.round(value / scale.reshape(shape)), -127, 127).astype(np.int8)
            self.init(quantized, "fc.weight_q")
            self.init(scale.astype(self.dtype), "fc.weight_scale")
            self.init(np.zeros(len(scale), np.int8), "fc.weight_zp")
            self.nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    ["fc.weight_q", "fc.weight_scale", "fc.weight_zp"],
                    ["fc.weight"],
                    name="fc_dq",
                    axis=axis,
                )
            )
            return quantized.astype(np.float64) * scale.astype(self.dtype).reshape(shape)
        return self.init(value.astype(self.dtype), "fc.weight")
