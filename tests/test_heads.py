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
        elif op == "BinaryProba":  # skl2onnx's binary probabilities [1 - p, p]
            out = np.hstack([1 - out, out])
        elif op == "BinaryScores":  # a binary LinearClassifier's tied rows: [-z, z]
            out = np.hstack([-out, out])
        elif op == "PositiveColumn":
            out = out[:, 1:2]
        elif op == "NormalizeL1":
            out = out / np.abs(out).sum(axis=1, keepdims=True)
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


# ----------------------------------------------------------------- casts and reshapes in the head


def autocast_model(*, mid_cast=onnx.TensorProto.FLOAT, seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """open_nsfw's tail (a torch export of an autocast model): ``Cast -> MatMul -> Cast -> Add -> Cast -> Softmax``.

    ``mid_cast`` is the type the Cast between MatMul and Add converts to (float: a no-op).
    """
    h = onnx.helper
    rng = np.random.default_rng(seed)
    A, W, b = rng.normal(size=(6, 8)), rng.normal(size=(8, 3)), rng.normal(size=3)
    bias_type = onnx.helper.tensor_dtype_to_np_dtype(mid_cast)
    nodes = [
        h.make_node("MatMul", ["x", "A"], ["pre"], name="backbone"),
        h.make_node("Relu", ["pre"], ["relu"], name="relu"),
        h.make_node("Cast", ["relu"], ["embedding"], name="/Cast_306", to=onnx.TensorProto.FLOAT),
        h.make_node("MatMul", ["embedding", "W"], ["mm"], name="/MatMul"),
        h.make_node("Cast", ["mm"], ["mm_cast"], name="/Cast_307", to=mid_cast),
        h.make_node("Add", ["mm_cast", "b"], ["z"], name="/Add_126"),
        h.make_node("Cast", ["z"], ["z_cast"], name="/Cast_308", to=onnx.TensorProto.FLOAT),
        h.make_node("Softmax", ["z_cast"], ["probs"], name="/Softmax", axis=-1),
    ]
    inits = [
        onnx.numpy_helper.from_array(A.astype(np.float32), "A"),
        onnx.numpy_helper.from_array(W.astype(np.float32), "W"),
        onnx.numpy_helper.from_array(b.astype(bias_type), "b"),
    ]
    graph = h.make_graph(
        nodes,
        "autocast",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [h.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, {"A": A.astype(np.float32), "W": W.astype(np.float32).T, "b": b}


def test_same_type_casts_between_matmul_and_add_are_part_of_the_head():
    """open_nsfw: ``MatMul -> Cast(float->float) -> Add``; the Cast computes nothing, so this is a head."""
    model, params = autocast_model()
    spec = locate_head(model)
    assert (spec.pattern, spec.nodes, spec.post_ops) == (
        "matmul_add",
        ["/MatMul", "/Cast_307", "/Add_126"],
        ["Cast", "Softmax"],
    )
    assert spec.embedding == "embedding"
    assert locate_head(model, head_node="/MatMul") == spec
    assert locate_head(model, embedding="embedding") == spec
    W, b = read_head(model, spec)
    assert relative_error(W, params["W"]) < 1e-6 and relative_error(b, params["b"]) < 1e-6
    rng = np.random.default_rng(1)
    new_W, new_b = rng.normal(size=(3, 8)), rng.normal(size=3)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    (probs,) = run(tuned_model(model, spec, new_W, new_b, {}), x)
    embedding = np.maximum(x.astype(np.float64) @ params["A"], 0)
    assert relative_error(probs, numpy_post_ops(embedding @ new_W.T + new_b, ["Softmax"])) < 1e-5


def test_a_rounding_cast_between_matmul_and_add_is_not_a_head():
    """A Cast to float16 rounds the product: the head would not be affine in float32, so it is not taken."""
    model, _ = autocast_model(mid_cast=onnx.TensorProto.FLOAT16)
    with pytest.raises(ModelError, match=r"'probs' <- Add node '/Add_126'"):
        locate_head(model)


def caffe2_reshape_model(shape=(3, -1)) -> tuple[onnx.ModelProto, dict]:
    """The Caffe2 converter's head (zoo GoogLeNet): ``Gemm(e, Reshape(W_stored, shape), b)``, W stored 4-D."""
    h = onnx.helper
    rng = np.random.default_rng(0)
    A, W, b = rng.normal(size=(6, 8)), rng.normal(size=(3, 8)), rng.normal(size=3)
    nodes = [
        h.make_node("MatMul", ["x", "A"], ["pre"], name="backbone"),
        h.make_node("Relu", ["pre"], ["embedding"], name="relu"),
        h.make_node("Reshape", ["loss3/classifier_w_0", "OC2_DUMMY_3"], ["r142"], name="n141"),
        h.make_node("Gemm", ["embedding", "r142", "loss3/classifier_b_0"], ["r143"], name="n142", transB=1),
        h.make_node("Softmax", ["r143"], ["prob_1"], name="n143"),
    ]
    inits = [
        onnx.numpy_helper.from_array(A.astype(np.float32), "A"),
        onnx.numpy_helper.from_array(W.reshape(3, 8, 1, 1).astype(np.float32), "loss3/classifier_w_0"),
        onnx.numpy_helper.from_array(np.array(shape, np.int64), "OC2_DUMMY_3"),
        onnx.numpy_helper.from_array(b.astype(np.float32), "loss3/classifier_b_0"),
    ]
    graph = h.make_graph(
        nodes,
        "caffe2",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [h.make_tensor_value_info("prob_1", onnx.TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 9)], producer_name="onnx-caffe2")
    model.ir_version = 4
    onnx.checker.check_model(model)
    return model, {"A": A.astype(np.float32), "W": W.astype(np.float32), "b": b.astype(np.float32)}


@pytest.mark.parametrize("shape", [(3, -1), (0, 8), (-1, 8)])
def test_weight_reached_through_a_reshape_is_read_and_written_back_through_it(shape):
    model, params = caffe2_reshape_model(shape)
    spec = locate_head(model)
    assert (spec.pattern, spec.nodes, spec.weight.via, spec.weight.tensor) == (
        "gemm",
        ["n142"],
        ("Reshape",),
        "loss3/classifier_w_0",
    )
    W, b = read_head(model, spec)
    assert relative_error(W, params["W"]) < 1e-6 and relative_error(b, params["b"]) < 1e-6
    rng = np.random.default_rng(1)
    new_W, new_b = rng.normal(size=(3, 8)), rng.normal(size=3)
    tuned = tuned_model(model, spec, new_W, new_b, {})
    stored = onnx.numpy_helper.to_array(next(t for t in tuned.graph.initializer if t.name == "loss3/classifier_w_0"))
    assert stored.shape == (3, 8, 1, 1)  # the stored constant keeps its shape; the Reshape stays
    np.testing.assert_allclose(stored.reshape(3, 8), new_W, rtol=1e-6)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    (probs,) = run(tuned, x)
    embedding = np.maximum(x.astype(np.float64) @ params["A"], 0)
    assert relative_error(probs, numpy_post_ops(embedding @ new_W.T + new_b, ["Softmax"])) < 1e-5


def light_inception_with_weights() -> onnx.ModelProto:
    """onnx's ``light_inception_v1`` (the zoo GoogLeNet's Caffe2 graph) with its ConstantOfShape weights stored.

    The light test models replace every weight by a ``ConstantOfShape``; storing seeded random
    values instead gives the real model's structure: IR 3, initializers as graph inputs, the
    classifier weight reshaped to ``(1000, 1024)`` before its Gemm.
    """
    from pathlib import Path

    from ntonnx.graph.index import GraphIndex, add_initializer

    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_inception_v1.onnx"
    model = onnx.load(str(path))
    index = GraphIndex(model)
    rng = np.random.default_rng(0)
    for node in [n for n in model.graph.node if n.op_type == "ConstantOfShape"]:
        shape = index.constant(node.input[0])
        model.graph.node.remove(node)
        add_initializer(model, (0.02 * rng.standard_normal(shape)).astype(np.float32), node.output[0])
    return model


def test_light_inception_head_is_found_through_its_reshape():
    model = light_inception_with_weights()
    spec = locate_head(model)
    assert (spec.pattern, spec.nodes, spec.weight.via, spec.embedding) == ("gemm", ["n142"], ("Reshape",), "r141")
    assert (spec.n_classes, spec.dim, spec.post_ops) == (1000, 1024, ["Softmax"])
    W, b = read_head(model, spec)
    new_W = W[::-1].copy()  # classes in reverse order
    tuned = tuned_model(model, spec, new_W, b, {})
    np.testing.assert_array_equal(read_head(tuned, spec)[0], new_W)


@pytest.mark.parametrize("build", [autocast_model, caffe2_reshape_model], ids=["autocast_casts", "caffe2_reshape"])
def test_cli_tunes_heads_behind_casts_and_reshapes(build, tmp_path):
    """Through ``ntonnx tune`` (exit 3 "no linear head" before): written, verified, reloaded, evaluated."""
    from builders import tiny_data
    from click.testing import CliRunner
    from ntonnx_cli.main import main

    model, params = build()
    onnx.save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    out = tmp_path / "tuned.onnx"
    args = ["tune", tmp_path / "model.onnx", "--data", tmp_path / "d.npz", "-o", out, "--method", "llr"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    written = onnx.load(str(out))
    spec = locate_head(written)
    assert spec == locate_head(model)
    assert relative_error(read_head(written, spec)[0], read_head(model, spec)[0]) > 1e-3  # re-fit, not copied
    assert any(p.key == "ntonnx.method" and p.value == "llr" for p in written.metadata_props)
    result = CliRunner().invoke(main, ["evaluate", str(out), "--data", str(tmp_path / "d.npz")])
    assert result.exit_code == 0 and "worst-class" in result.output, result.output


# --------------------------------------------------------------------- evaluate without a head


def relu_after_logits(n_classes: int = 3, post_op: str = "Softmax") -> tuple[onnx.ModelProto, dict]:
    """``Gemm -> Relu -> post_op``: the ReLU makes the head non-linear, so there is no head to re-solve."""
    h = onnx.helper
    model, params = head_model(n_classes=n_classes)
    graph = model.graph
    next(n for n in graph.node if n.name == "fc").output[0] = "raw"
    graph.node.extend(
        [
            h.make_node("Relu", ["raw"], ["scores"], name="clip"),
            h.make_node(post_op, ["scores"], ["probs"], name="post"),
        ]
    )
    del graph.output[:]
    graph.output.append(h.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", n_classes]))
    onnx.checker.check_model(model)
    return model, params


@pytest.mark.parametrize(("n_classes", "post_op"), [(3, "Softmax"), (1, "Sigmoid")])
def test_evaluate_scores_the_output_when_there_is_no_head(n_classes, post_op, tmp_path):
    """``evaluate`` never needs the head (exit 3 before): argmax of the scores, ``> 0`` for one logit."""
    import json

    from builders import tiny_data
    from click.testing import CliRunner
    from ntonnx_cli.main import main

    model, params = relu_after_logits(n_classes, post_op)
    onnx.save(model, tmp_path / "model.onnx")
    arrays = tiny_data(params, n=60)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ModelError, match="no linear head"):
        locate_head(model)
    runner = CliRunner()
    result = runner.invoke(
        main, ["evaluate", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "d.npz"), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["head"]["pattern"] == "none" and report["head"]["logits"] == "scores"
    assert report["head"]["post_ops"] == [post_op]
    scores = np.maximum(np.maximum(arrays["x"] @ params["A"], 0) @ params["W"].T + params["b"], 0)
    predicted = scores.argmax(axis=1) if n_classes > 1 else (scores[:, 0] > 0).astype(int)
    assert report["metrics"]["accuracy"] == pytest.approx((predicted == arrays["labels"]).mean())
    # tune still needs a head, and a named head that is not one is still an error
    result = runner.invoke(
        main, ["tune", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "o.onnx")]
    )
    assert result.exit_code == 3 and "no linear head" in result.stderr
    args = ["evaluate", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "d.npz"), "--head-node", "clip"]
    assert runner.invoke(main, args).exit_code == 3


def test_scores_of_a_zipmap_output_and_of_ambiguous_outputs():
    from skl2onnx import to_onnx
    from sklearn.tree import DecisionTreeClassifier

    from ntonnx.graph.heads.scores import output_scores

    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    tree = DecisionTreeClassifier(max_depth=2).fit(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    spec = output_scores(to_onnx(tree, X[:1], target_opset=17))  # label (int64) + ZipMap of probabilities
    assert (spec.output, spec.logits, spec.n_classes, spec.post_ops) == (
        "output_probability",
        "probabilities",
        3,
        ["ZipMap"],
    )

    model, _ = relu_after_logits()
    model.graph.output.append(onnx.helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["N", 3]))
    with pytest.raises(
        ModelError, match=r"several graph outputs hold class scores \(\['probs', 'scores'\]\); pass --output"
    ):
        output_scores(model)
    assert output_scores(model, "scores").post_ops == []
    assert output_scores(model, "probs").logits == "scores"


# ------------------------------------------------------------------------ ai.onnx.ml LinearClassifier


def linear_classifier_model(
    post_transform: str = "NONE", *, tied: bool = False, pick_column: bool = False
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """``X -> LinearClassifier`` (coefficients as attributes), optionally ``ArrayFeatureExtractor(scores, [1])``."""
    h = onnx.helper
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    if tied:
        W[0], b[0] = -W[1], -b[1]
    nodes = [
        h.make_node(
            "LinearClassifier",
            ["X"],
            ["label", "scores"],
            name="linear",
            domain="ai.onnx.ml",
            coefficients=W.ravel().tolist(),
            intercepts=b.tolist(),
            classlabels_ints=[0, 1],
            post_transform=post_transform,
        )
    ]
    inits, scores = [], "scores"
    if pick_column:
        inits = [onnx.numpy_helper.from_array(np.array([1], np.int64), "column")]
        nodes.append(h.make_node("ArrayFeatureExtractor", ["scores", "column"], ["picked"], domain="ai.onnx.ml"))
        scores = "picked"
    graph = h.make_graph(
        nodes,
        "linear",
        [h.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["N", 4])],
        [
            h.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N"]),
            h.make_tensor_value_info(scores, onnx.TensorProto.FLOAT, ["N", 1 if pick_column else 2]),
        ],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    return model, W.astype(np.float64), b.astype(np.float64)


def test_linear_classifier_head_and_its_limits():
    model, W, _ = linear_classifier_model("SOFTMAX")
    spec = locate_head(model)
    assert (spec.pattern, spec.embedding, spec.logits, spec.n_classes, spec.inner_post_ops, spec.post_ops) == (
        "linear_classifier",
        "X",
        "scores",
        2,
        ["Softmax"],
        [],
    )
    np.testing.assert_array_equal(read_head(model, spec)[0], W)
    assert locate_head(model, embedding="X") == spec
    tied, W, b = linear_classifier_model("NONE", tied=True, pick_column=True)
    spec = locate_head(tied)
    assert (spec.n_classes, spec.inner_post_ops, spec.post_ops) == (1, ["BinaryScores"], ["PositiveColumn"])
    np.testing.assert_array_equal(read_head(tied, spec)[0], W[1:])
    np.testing.assert_array_equal(read_head(tied, spec)[1], b[1:])
    rewritten = tuned_model(tied, spec, np.ones((1, 4)), np.array([0.5]), {})
    node = rewritten.graph.node[0]
    stored = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert stored["coefficients"] == [-1.0] * 4 + [1.0] * 4 and stored["intercepts"] == [-0.5, 0.5]  # kept tied
    # column 1 of two independent scores does not say which class wins; a transform onnx has but ntonnx
    # does not model is not taken either
    with pytest.raises(ModelError, match="no linear head"):
        locate_head(linear_classifier_model("NONE", pick_column=True)[0])
    with pytest.raises(ModelError, match="no linear head"):
        locate_head(linear_classifier_model("PROBIT")[0])
    with pytest.raises(ModelError, match=r"'label' <- LinearClassifier node 'linear'"):
        locate_head(model, output="label")  # the label is an output of the head node, not its scores


def test_a_cast_to_integers_is_not_a_post_op():
    """Truncating scores to int64 can change the winner: the walk back stops there."""
    model, _ = head_model(post_ops=("Softmax",))
    model.graph.node.append(
        onnx.helper.make_node("Cast", ["logits"], ["rounded"], name="trunc", to=onnx.TensorProto.INT64)
    )
    model.graph.output.append(onnx.helper.make_tensor_value_info("rounded", onnx.TensorProto.INT64, ["N", 3]))
    with pytest.raises(ModelError, match=r"'rounded' <- Cast node 'trunc'"):
        locate_head(model, output="rounded")
    assert locate_head(model).output == "logits"
