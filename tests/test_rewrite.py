"""The written model: only the head changes, it computes embedding @ W.T + b, inputs stay intact."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import sha256

import ntonnx
from ntonnx.graph.heads import locate_head, read_head
from ntonnx.graph.model_io import load_model

HEADS = ["gemm_transB1", "gemm_transB0", "matmul_add", "matmul"]


def run_with_embedding(model: onnx.ModelProto, head, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name=head.embedding))
    probe.graph.output.append(onnx.ValueInfoProto(name=head.logits))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    embedding, logits = session.run([head.embedding, head.logits], {"x": x})
    return embedding, logits


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("method", ["neurontune", "llr", "dfr", "afr"])
def test_round_trip_logits_equal_numpy(tiny, tmp_path, head, method):
    model_path, data_path, _ = tiny(head=head, post_op="Softmax")
    before = sha256(model_path)
    out = tmp_path / "out.onnx"
    ntonnx.tune(model_path, out, data=data_path, options=ntonnx.TuneOptions(method=method, rule="any"))

    assert sha256(model_path) == before, "input model was modified"
    original, tuned = onnx.load(model_path), onnx.load(out)
    spec = locate_head(tuned)
    W, b = read_head(tuned, spec)
    W0, _ = read_head(original, locate_head(original))
    assert not np.allclose(W, W0), "the head was not re-solved"

    x = np.random.default_rng(5).normal(size=(32, 6)).astype(np.float32)
    embedding, logits = run_with_embedding(tuned, spec, x)
    np.testing.assert_allclose(logits, embedding.astype(np.float64) @ W.T + b, rtol=1e-5, atol=1e-5)

    assert [i.name for i in tuned.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in tuned.graph.output] == [o.name for o in original.graph.output]
    assert tuned.opset_import == original.opset_import
    assert tuned.ir_version == original.ir_version
    assert tuned.producer_name == original.producer_name
    assert len(tuned.graph.node) == len(original.graph.node)


def test_only_head_initializers_change(tiny, tmp_path):
    model_path, data_path, _ = tiny(head="gemm_transB1")
    out = tmp_path / "out.onnx"
    ntonnx.tune(model_path, out, data=data_path, options=ntonnx.TuneOptions(method="llr"))
    original = {t.name: t for t in onnx.load(model_path).graph.initializer}
    tuned = {t.name: t for t in onnx.load(out).graph.initializer}
    assert set(original) == set(tuned)
    changed = {name for name in original if original[name] != tuned[name]}
    assert changed == {"fc.weight", "fc.bias"}


def test_metadata_records_what_was_done_and_keeps_the_original(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    out = tmp_path / "out.onnx"
    result = ntonnx.tune(model_path, out, data=data_path, options=ntonnx.TuneOptions(rule="any"))
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["author"] == "tests"
    assert props["ntonnx.method"] == "neurontune"
    assert props["ntonnx.version"] == ntonnx.__version__
    assert json.loads(props["ntonnx.suppressed_neurons"]) == result.suppressed
    assert json.loads(props["ntonnx.options"])["rule"] == "any"
    assert json.loads(props["ntonnx.data_sha256"]) == {str(data_path): sha256(data_path)}

    # Tuning the tuned model replaces ntonnx's entries instead of piling them up.
    again = tmp_path / "again.onnx"
    ntonnx.tune(out, again, data=data_path, options=ntonnx.TuneOptions(method="llr"))
    keys = [p.key for p in onnx.load(again).metadata_props]
    assert keys.count("ntonnx.method") == 1
    assert {p.key: p.value for p in onnx.load(again).metadata_props}["ntonnx.method"] == "llr"


def test_refuses_to_overwrite_the_input(tiny):
    model_path, data_path, _ = tiny()
    before = sha256(model_path)
    with pytest.raises(ntonnx.UsageError, match="is an input file"):
        ntonnx.tune(model_path, model_path, data=data_path, force=True)
    assert sha256(model_path) == before


def test_existing_output_needs_force(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    out = tmp_path / "out.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(ntonnx.UsageError, match="already exists; pass --force"):
        ntonnx.tune(model_path, out, data=data_path)
    assert out.read_bytes() == b"keep me"
    ntonnx.tune(model_path, out, data=data_path, force=True)
    assert load_model(out).proto.graph.node


def test_failed_verification_writes_nothing(tiny, tmp_path, monkeypatch):
    model_path, data_path, _ = tiny()
    out = tmp_path / "out.onnx"

    def broken(*args, **kwargs):
        raise ntonnx.VerificationError("simulated mismatch")

    monkeypatch.setattr("ntonnx.session.verify_written", broken)
    with pytest.raises(ntonnx.VerificationError, match="simulated mismatch"):
        ntonnx.tune(model_path, out, data=data_path)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([model_path.name, data_path.name])


def test_shared_weight_gets_its_own_initializer():
    from builders import tiny_classifier

    from ntonnx.graph.index import GraphIndex, replace_constant

    model, params = tiny_classifier(head="gemm_transB1")
    # a second node reads the head's weight: it must keep the old values
    model.graph.node.append(onnx.helper.make_node("Identity", ["fc.weight"], ["weight_copy"], name="other"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("weight_copy", onnx.TensorProto.FLOAT, None))
    head_node = GraphIndex(model).producer("logits")
    new_name = replace_constant(model, "fc.weight", np.zeros((3, 8)), head_node)
    assert new_name != "fc.weight"
    index = GraphIndex(model)
    np.testing.assert_array_equal(index.constant("fc.weight"), params["W"])
    np.testing.assert_array_equal(index.constant(new_name), np.zeros((3, 8)))
    assert head_node.input[1] == new_name


# ------------------------------------------------------------------ verification tolerances


def confident_head(scale: float = 300.0, n: int = 64, d: int = 200):
    """PaddleOCR's classifier tail (``Gemm -> Softmax -> Identity``, width 200) with large, nearly tied logits.

    Two classes whose logits are ~10^2 apart from zero but within ~1 of each other: float32 knows
    each logit to ~1e-5, so the probabilities (near 0.5) are only known to ~1e-5 too.
    """
    from ntonnx.data.dataset import ArrayDataset

    h = onnx.helper
    rng = np.random.default_rng(0)
    w = rng.normal(size=d) * scale / np.sqrt(d)
    W = np.stack([w, w + rng.normal(size=d) * 1e-3]).astype(np.float32)
    b = np.array([0.5, -0.5], np.float32)
    nodes = [
        h.make_node("Relu", ["x"], ["e"], name="relu"),
        h.make_node("Gemm", ["e", "fc_0.w_0", "fc_0.b_0"], ["z"], name="fc", transB=1),
        h.make_node("Softmax", ["z"], ["p"], name="softmax", axis=1),
        h.make_node("Identity", ["p"], ["save_infer_model/scale_0.tmp_1"], name="scale"),
    ]
    graph = h.make_graph(
        nodes,
        "paddle",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", d])],
        [h.make_tensor_value_info("save_infer_model/scale_0.tmp_1", onnx.TensorProto.FLOAT, ["N", 2])],
        [onnx.numpy_helper.from_array(W, "fc_0.w_0"), onnx.numpy_helper.from_array(b, "fc_0.b_0")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 11)], producer_name="PaddlePaddle")
    model.ir_version = 7
    x = rng.normal(size=(n, d)).astype(np.float32)
    sample = ArrayDataset(inputs={"x": x}, labels=np.zeros(n, np.int64), groups=None, source="t")
    return model, W.astype(np.float64), b.astype(np.float64), sample


def _verify(model, W, b, sample, tmp_path):
    from ntonnx.graph.verify import verify_written

    spec = locate_head(model)
    path = tmp_path / "written.onnx"
    onnx.save(model, str(path))
    return verify_written(path, spec, W, b, sample, ["CPUExecutionProvider"], original=model)


def test_probabilities_of_large_logits_are_checked_at_their_float32_precision(tmp_path):
    """Refused before: "output differs from Softmax -> Identity of the expected logits by 1.1e-05 (> 1e-05)"."""
    model, W, b, sample = confident_head()
    verification = _verify(model, W, b, sample, tmp_path)
    assert verification.output_error > 1e-5  # what the fixed 1e-5 refused
    assert verification.margin <= 1 and verification.max_error <= verification.tolerance


@pytest.mark.parametrize("wrong", ["float16_weights", "bias_shift", "one_weight"])
def test_a_wrong_head_is_still_refused(wrong, tmp_path, monkeypatch):
    """The graph computes a head slightly different from the one claimed: each is refused at the logits."""
    from ntonnx.errors import VerificationError

    model, W, b, sample = confident_head(scale=10.0)
    claimed_W, claimed_b = W.copy(), b.copy()
    if wrong == "float16_weights":  # e.g. a write path that rounded the weights through float16
        claimed_W = W.astype(np.float16).astype(np.float64)
    elif wrong == "bias_shift":  # one class's bias off by 1e-4 (logits are ~10)
        claimed_b[1] += 1e-4
    else:  # one weight of 200 off by 0.1 %
        claimed_W[0, np.argmax(np.abs(W[0]))] *= 1.001
    monkeypatch.setattr("ntonnx.graph.verify.read_head", lambda _model, _spec: (claimed_W, claimed_b))
    with pytest.raises(VerificationError, match=r"logits differ from embedding @ W.T \+ b by .* at sample \d+, class"):
        _verify(model, claimed_W, claimed_b, sample, tmp_path)


@pytest.mark.parametrize("post_ops", [["Softmax"], ["LogSoftmax"], ["Sigmoid"], ["Softmax", "NormalizeL1"]])
def test_output_bounds_hold_float32_and_refuse_float16(post_ops):
    """onnxruntime's float32 post-ops of float32 logits stay within the bounds; float16 results do not."""
    from ntonnx.graph.heads import apply_post_ops
    from ntonnx.graph.rounding import logit_bounds, output_bounds, worst_excess

    rng = np.random.default_rng(0)
    e, W, b = np.abs(rng.normal(size=(200, 64))), rng.normal(size=(5, 64)), rng.normal(size=5)
    exact = e @ W.T + b
    bounds = logit_bounds(exact, e @ np.abs(W).T + np.abs(b), b, terms=65, dtype=np.float32)
    allowed = output_bounds(exact, bounds, post_ops, dtype=np.float32, logits_dtype=np.float32)
    ops = [op if op != "NormalizeL1" else "Identity" for op in post_ops]  # softmax rows already sum to 1
    node = [onnx.helper.make_node(op, ["z"], [f"y{i}"]) for i, op in enumerate(ops)]
    for i in range(1, len(node)):
        node[i].input[0] = f"y{i - 1}"
    graph = onnx.helper.make_graph(
        node,
        "post",
        [onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["N", 5])],
        [onnx.helper.make_tensor_value_info(node[-1].output[0], onnx.TensorProto.FLOAT, ["N", 5])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = apply_post_ops(exact, post_ops)
    (got,) = session.run(None, {"z": exact.astype(np.float32)})
    assert worst_excess(got, want, allowed)[0] <= 1
    (coarse,) = session.run(None, {"z": exact.astype(np.float16).astype(np.float32)})
    assert worst_excess(coarse, want, allowed)[0] > 1


def test_verification_asks_cuda_for_full_float32_products(monkeypatch):
    """TF32 (CUDA's default on Ampere and later) rounds float32 products to 10 bits: off for verification.

    An onnxruntime that does not know the option still loads the model, as requested.
    """
    from builders import head_model

    from ntonnx.graph.runtime import ModelRunner

    model, _ = head_model()
    real, asked = ort.InferenceSession, []

    def spy(source, sess_options=None, providers=None):
        asked.append(providers)
        if isinstance(providers[0], tuple) and len(asked) == 3:
            raise RuntimeError("Unknown provider option: use_tf32")
        return real(source, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", spy)
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    ModelRunner(model, ["embedding"], cuda, "m", exact=True)
    ModelRunner(model, ["embedding"], cuda, "m")
    ModelRunner(model, ["embedding"], cuda, "m", exact=True)
    assert asked == [
        [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"],
        cuda,
        [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"],
        cuda,
    ]
