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
