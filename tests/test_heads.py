"""Head location, reading and rewriting on every layout/storage/post-op variant, checked in onnxruntime.

The expected numbers never come from ntonnx: the builders know the true effective weights, and
the rewritten model's outputs are compared with NumPy's ``relu(x @ A) @ W.T + b`` followed by the
post-ops, computed here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import LAYOUTS, POST_OPS, STORAGES, head_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ntonnx.data.dataset import ArrayDataset
from ntonnx.errors import ModelError, UsageError
from ntonnx.graph.heads import locate_head, read_head
from ntonnx.graph.model_io import staged_model
from ntonnx.graph.rewrite import tuned_model
from ntonnx.graph.verify import verify_written

PATTERN_OF = {
    "gemm_transB1": "gemm",
    "gemm_transB0": "gemm",
    "gemm_nobias": "gemm",
    "matmul_add": "matmul_add",
    "matmul": "matmul",
    "matmul_transposed": "matmul_add",
    "conv1x1": "conv1x1",
}


def numpy_post_ops(logits: np.ndarray, post_ops) -> np.ndarray:
    """The post-ops, written out independently of ntonnx.graph.heads.postops."""
    out = logits
    for op in post_ops:
        if op == "Softmax":
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        elif op == "LogSoftmax":
            shifted = out - out.max(axis=1, keepdims=True)
            out = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        elif op == "Sigmoid":
            out = 1 / (1 + np.exp(-out))
    return out


def run(model: onnx.ModelProto, x: np.ndarray, exact: bool = False) -> list[np.ndarray]:
    """Outputs of ``model``; ``exact`` avoids the fusion that quantizes activations of int8-weight MatMuls."""
    options = ort.SessionOptions()
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def relative_error(got, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / max(1.0, np.abs(expected).max()))


variants = st.fixed_dictionaries(
    {
        "layout": st.sampled_from(LAYOUTS),
        "storage": st.sampled_from(STORAGES),
        "bias_side": st.sampled_from(["left", "right"]),
        "post_ops": st.lists(st.sampled_from(POST_OPS), max_size=2).map(tuple),
        "dtype": st.sampled_from([np.float32, np.float16]),
        "n_classes": st.sampled_from([1, 2, 3, 7]),
        "alpha": st.sampled_from([1.0, 0.5, 2.0]),
        "beta": st.sampled_from([1.0, 0.25]),
        "batch": st.sampled_from(["N", 5]),
        "seed": st.integers(0, 1000),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=variants)
def test_round_trip_of_every_head_variant(options, tmp_path):
    """Detect, read the true weights, write new ones, and get exactly ``v @ W.T + b`` (then post-ops) back."""
    if not options["layout"].startswith("gemm"):
        options = {**options, "alpha": 1.0, "beta": 1.0}
    # int8 scales in float16 need opset 19; IR 3 (opset 8) has neither float16 MatMul nor Gemm without C.
    assume(not (options["storage"] == "qdq_per_channel" and options["dtype"] == np.float16))
    assume(
        not (
            options["storage"] == "graph_input"
            and (options["dtype"] == np.float16 or options["layout"] == "gemm_nobias")
        )
    )
    model, params = head_model(**options)
    half = options["dtype"] == np.float16 or options["storage"] == "cast_fp16"
    tolerance = 1e-2 if half else 1e-5

    spec = locate_head(model)
    assert spec.pattern == PATTERN_OF[options["layout"]]
    assert (spec.n_classes, spec.dim, spec.output) == (options["n_classes"], 8, "logits")
    flatten = ["Flatten"] if options["layout"] == "conv1x1" else []  # the conv head's own (N, C, 1, 1) -> (N, C)
    assert spec.post_ops == flatten + list(options["post_ops"])
    assert spec.has_bias == (options["layout"] not in ("gemm_nobias", "matmul"))
    W, b = read_head(model, spec)
    assert relative_error(W, params["W"]) < 1e-6
    assert relative_error(b, params["b"]) < 1e-6

    rng = np.random.default_rng(options["seed"])
    new_W = rng.normal(size=W.shape)
    new_b = rng.normal(size=b.shape) if spec.has_bias else np.zeros_like(b)
    tuned = tuned_model(model, spec, new_W, new_b, {"method": "test"})
    stored_W, stored_b = read_head(tuned, spec)
    quantized = options["storage"] == "qdq_per_channel"
    assert relative_error(stored_W, new_W) < (4e-3 if quantized else tolerance)
    assert relative_error(stored_b, new_b) < tolerance

    x = rng.normal(size=(5, 6)).astype(options["dtype"])
    embedding = np.maximum(x.astype(np.float64) @ params["A"].astype(np.float64), 0)
    expected = numpy_post_ops(embedding @ stored_W.T + stored_b, options["post_ops"])
    (logits, *others) = run(tuned, x, exact=quantized)
    assert logits.shape == (5, options["n_classes"])
    assert logits.dtype == options["dtype"]
    assert relative_error(logits, expected) < tolerance
    if options["storage"] == "shared":  # the other reader of the weight still sees the old numbers
        assert others[0].tobytes() == run(model, x)[1].tobytes()

    path = tmp_path / "tuned.onnx"
    sample = ArrayDataset(inputs={"x": x}, labels=np.zeros(5, np.int64), groups=None, source="test")
    with staged_model(tuned, path, external_data=False) as staged:
        verify_written(staged.path, spec, new_W, new_b, sample, ["CPUExecutionProvider"], original=model)
    written = onnx.load(str(staged.files[0]))
    assert written.opset_import == model.opset_import
    assert (written.ir_version, written.producer_name, written.producer_version) == (
        model.ir_version,
        model.producer_name,
        model.producer_version,
    )
    kept = {p.key: p.value for p in written.metadata_props if not p.key.startswith("ntonnx.")}
    assert kept == {"author": "tests", "license": "none"}
    assert [i.name for i in written.graph.input][:1] == ["x"]


@pytest.mark.parametrize("layout", ["gemm_transB1", "matmul_transposed", "conv1x1"])
def test_shared_weight_gets_its_own_copy(layout):
    """A weight another node reads is copied for the head; the original tensor keeps its values."""
    model, _ = head_model(layout=layout, storage="shared")
    spec = locate_head(model, output="logits")
    before = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc.weight"))
    tuned = tuned_model(model, spec, np.ones((3, 8)), np.zeros(3), {})
    after = onnx.numpy_helper.to_array(next(t for t in tuned.graph.initializer if t.name == "fc.weight"))
    np.testing.assert_array_equal(before, after)
    assert len(tuned.graph.initializer) == len(model.graph.initializer) + 1
    np.testing.assert_allclose(read_head(tuned, spec)[0], np.ones((3, 8)))


def test_qdq_requantizes_with_a_fitted_scale():
    """New weights ten times larger are not clipped: the scale follows them, per channel."""
    model, params = head_model(layout="gemm_transB1", storage="qdq_per_channel")
    spec = locate_head(model)
    assert spec.dtype == "int8" and spec.weight.via == ("DequantizeLinear",)
    target = 10 * params["W"]
    tuned = tuned_model(model, spec, target, params["b"], {})
    W, _ = read_head(tuned, spec)
    assert relative_error(W, target) < 4e-3
    stored = onnx.numpy_helper.to_array(next(t for t in tuned.graph.initializer if t.name == "fc.weight_q"))
    assert stored.dtype == np.int8 and np.abs(stored).max() == 127


def token_model(pool: str) -> onnx.ModelProto:
    """ids -> embedding table -> Relu -> per-token MatMul+Add -> ``pool`` -> Softmax."""
    h = onnx.helper
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(rng.normal(size=(20, 8)).astype(np.float32), "table"),
        onnx.numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "fc.weight"),
        onnx.numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "fc.bias"),
        onnx.numpy_helper.from_array(np.array(-1, np.int64), "last"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), "token_axis"),
    ]
    pools = {
        "last_token": h.make_node("Gather", ["per_token", "last"], ["pooled"], name="pick", axis=1),
        "mean": h.make_node("ReduceMean", ["per_token", "token_axis"], ["pooled"], name="pool", keepdims=0),
        "sum": h.make_node("ReduceSum", ["per_token", "token_axis"], ["pooled"], name="pool", keepdims=0),
    }
    nodes = [
        h.make_node("Gather", ["table", "ids"], ["tokens"], name="embed"),
        h.make_node("Relu", ["tokens"], ["hidden"], name="relu"),
        h.make_node("MatMul", ["hidden", "fc.weight"], ["mm"], name="fc_matmul"),
        h.make_node("Add", ["mm", "fc.bias"], ["per_token"], name="fc_add"),
        pools[pool],
        h.make_node("Softmax", ["pooled"], ["probs"], name="softmax"),
    ]
    graph = h.make_graph(
        nodes,
        "tokens",
        [h.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N", 5])],
        [h.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("pool", ["last_token", "mean"])
def test_per_token_head_with_pooling(pool, tmp_path):
    """A head applied to every token then pooled is the same head on the pooled embedding."""
    model = token_model(pool)
    spec = locate_head(model)
    assert spec.pattern == "matmul_add" and spec.pooling is not None
    assert spec.nodes[-1] == ("pick" if pool == "last_token" else "pool") and spec.post_ops == ["Softmax"]
    rng = np.random.default_rng(1)
    new_W, new_b = rng.normal(size=(3, 8)), rng.normal(size=3)
    tuned = tuned_model(model, spec, new_W, new_b, {})
    ids = rng.integers(0, 20, size=(4, 5))
    (table,) = [onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer if t.name == "table"]
    hidden = np.maximum(table[ids], 0)
    pooled = hidden[:, -1] if pool == "last_token" else hidden.mean(axis=1)
    session = ort.InferenceSession(tuned.SerializeToString(), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"ids": ids})
    assert relative_error(probs, numpy_post_ops(pooled @ new_W.T + new_b, ["Softmax"])) < 1e-5
    sample = ArrayDataset(inputs={"ids": ids}, labels=np.zeros(4, np.int64), groups=None, source="test")
    verification = verify_written(
        _saved(tuned, tmp_path), spec, new_W, new_b, sample, ["CPUExecutionProvider"], original=model
    )
    assert verification.max_error < 1e-5 and verification.output_error < 1e-5


def _saved(model: onnx.ModelProto, tmp_path) -> str:
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_sum_over_tokens_is_not_a_head():
    """ReduceSum scales the bias by the token count: refused, naming the node and the candidates."""
    with pytest.raises(ModelError, match=r"ReduceSum node 'pool'.*candidates: \[\"MatMul 'fc_matmul'\"\]"):
        locate_head(token_model("sum"))


def test_per_token_head_without_pooling_is_refused_at_extraction():
    model = token_model("last_token")
    spec = dataclasses.replace(locate_head(model), pooling=None)
    from ntonnx.graph.heads import head_activations

    with pytest.raises(ModelError, match=r"embedding 'hidden' has shape \(4, 5, 8\).*Gather/ReduceMean"):
        head_activations(spec, np.zeros((4, 5, 8)), np.zeros((4, 5, 3)))


def _graph(nodes, inputs, outputs, inits=()):
    h = onnx.helper
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in inputs],
        [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in outputs],
        [onnx.numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in inits],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_weights_computed_at_run_time_are_named():
    h = onnx.helper
    model = _graph(
        [
            h.make_node("Mul", ["w0", "mask"], ["w"], name="masking"),
            h.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1),
        ],
        [("x", ["N", 4]), ("mask", [3, 4])],
        [("y", ["N", 3])],
        [("w0", (3, 4)), ("b", (3,))],
    )
    with pytest.raises(ModelError, match=r"weight 'w' is computed at run time by Mul node 'masking'.*--head-node"):
        locate_head(model)


def test_no_linear_head():
    model = _graph([onnx.helper.make_node("Relu", ["x"], ["y"], name="act")], [("x", ["N", 4])], [("y", ["N", 4])])
    with pytest.raises(ModelError, match=r"no linear head .* 'y' <- Relu node 'act'; candidates: \['none'\]"):
        locate_head(model)


def two_heads() -> onnx.ModelProto:
    """A backbone with a main head (logits) and an auxiliary one (aux), both Gemm."""
    h = onnx.helper
    return _graph(
        [
            h.make_node("Relu", ["x"], ["e"], name="relu"),
            h.make_node("Gemm", ["e", "w1", "b1"], ["logits"], name="main", transB=1),
            h.make_node("Gemm", ["e", "w2", "b2"], ["aux"], name="aux_head", transB=1),
        ],
        [("x", ["N", 4])],
        [("logits", ["N", 3]), ("aux", ["N", 2])],
        [("w1", (3, 4)), ("b1", (3,)), ("w2", (2, 4)), ("b2", (2,))],
    )


def test_ambiguous_heads_ask_for_output_and_each_can_be_chosen():
    model = two_heads()
    with pytest.raises(ModelError, match=r"logits <- main, aux <- aux_head.*--output NAME.*--head-node"):
        locate_head(model)
    assert locate_head(model, output="aux").nodes == ["aux_head"]
    assert locate_head(model, head_node="main").output == "logits"
    with pytest.raises(UsageError, match=r"--embedding 'e' feeds several linear heads \(main, aux_head\)"):
        locate_head(model, embedding="e")
    with pytest.raises(UsageError, match=r"--head-node 'nope' names no node.*Gemm 'main'"):
        locate_head(model, head_node="nope")
    with pytest.raises(UsageError, match=r"--output 'probs' is not a graph output"):
        locate_head(model, output="probs")


def test_squeezenet_relu_between_conv_and_pool_is_refused():
    h = onnx.helper
    model = _graph(
        [
            h.make_node("Conv", ["x", "w", "b"], ["c"], name="final_conv"),
            h.make_node("Relu", ["c"], ["r"], name="relu"),
            h.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
            h.make_node("Flatten", ["p"], ["y"], name="flatten"),
        ],
        [("x", ["N", 4, 5, 5])],
        [("y", ["N", 3])],
        [("w", (3, 4, 1, 1)), ("b", (3,))],
    )
    with pytest.raises(ModelError, match=r"'y' <- GlobalAveragePool node 'pool'.*Conv 'final_conv'"):
        locate_head(model)
    # Naming the conv gets a head, but not one that reaches the output linearly.
    with pytest.raises(
        ModelError, match=r"head 'final_conv' does not reach a graph output.*logits 'c' go to \['relu'\]"
    ):
        locate_head(model, head_node="final_conv")
