"""Head-scope verification: the structural proof and the head's own nodes, against the full end-to-end check."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data
from onnx import helper, numpy_helper

import ntonnx
from ntonnx.data import ArrayDataset
from ntonnx.graph.heads import locate_head
from ntonnx.graph.model_io import staged_model
from ntonnx.graph.rewrite import tuned_model
from ntonnx.graph.subgraph import NotProvable, changed_region, head_model
from ntonnx.graph.verify import verify_written

CPU = ["CPUExecutionProvider"]


def _setup(tmp_path, **kwargs):
    model, params = tiny_classifier(**kwargs)
    spec = locate_head(model)
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(spec.n_classes, spec.dim)), rng.normal(size=spec.n_classes)
    x = tiny_data(params, n=16)["x"]
    sample = ArrayDataset(inputs={"x": x}, labels=np.zeros(len(x), np.int64), groups=None, source="test")
    return model, spec, W, b, sample, tmp_path / "out.onnx"


@pytest.mark.parametrize("post_op", [None, "Softmax"])
def test_head_and_full_scopes_agree(tmp_path, post_op):
    model, spec, W, b, sample, out = _setup(tmp_path, post_op=post_op)
    tuned = tuned_model(model, spec, W, b, {})
    with staged_model(tuned, out, external_data=False) as staged:
        head = verify_written(staged.path, spec, W, b, sample, CPU, original=model, scope="head")
        full = verify_written(staged.path, spec, W, b, sample, CPU, original=model, scope="full")
    assert (head.scope, full.scope) == ("head", "full")
    assert head.max_error < 1e-5 and full.max_error < 1e-5
    assert head.n_samples == full.n_samples == len(sample)
    assert (head.output_error is None) == (post_op is None)


def test_head_scope_refuses_a_change_before_the_embedding(tmp_path):
    model, spec, W, b, sample, out = _setup(tmp_path)
    tuned = tuned_model(model, spec, W, b, {})
    backbone = next(t for t in tuned.graph.initializer if t.name == "backbone.weight")
    values = numpy_helper.to_array(backbone).copy()
    values[0, 0] += 1e-3  # a backbone weight the rewrite must never touch
    backbone.CopyFrom(numpy_helper.from_array(values, "backbone.weight"))
    with (
        staged_model(tuned, out, external_data=False) as staged,
        pytest.raises(ntonnx.VerificationError, match="computes the embedding 'embedding' differently"),
    ):
        verify_written(staged.path, spec, W, b, sample, CPU, original=model, scope="head")


def test_head_scope_refuses_a_changed_output_that_does_not_depend_on_the_head(tmp_path):
    model, _ = tiny_classifier()
    model.graph.node.append(helper.make_node("Relu", ["pre"], ["aux"], name="aux"))
    model.graph.output.append(helper.make_tensor_value_info("aux", onnx.TensorProto.FLOAT, ["N", 8]))
    spec = locate_head(model, output="logits")
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(spec.n_classes, spec.dim)), rng.normal(size=spec.n_classes)
    tuned = tuned_model(model, spec, W, b, {})
    aux = next(n for n in tuned.graph.node if n.name == "aux")
    aux.op_type = "Sigmoid"  # an output beside the head, changed
    with (
        staged_model(tuned, tmp_path / "o.onnx", external_data=False) as staged,
        pytest.raises(ntonnx.VerificationError, match="output 'aux'"),
    ):
        verify_written(
            staged.path, spec, W, b, None, CPU, original=model, scope="head", head_inputs=np.ones((2, 8), np.float32)
        )


def test_head_scope_falls_back_to_full_when_the_head_reads_a_graph_input(tmp_path):
    """A post-op whose shape comes from the model input cannot be cut at the embedding."""
    model, params = tiny_classifier()
    fc = next(n for n in model.graph.node if n.name == "fc")
    fc.output[0] = "scores"
    model.graph.node.extend([
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Slice", ["x_shape", "zero", "one"], ["batch"], name="batch"),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["scores", "target"], ["logits"], name="reshape"),
    ])  # fmt: skip
    for name, value in (("zero", [0]), ("one", [1]), ("minus_one", [-1])):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    spec = locate_head(model)
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(spec.n_classes, spec.dim)), rng.normal(size=spec.n_classes)
    tuned = tuned_model(model, spec, W, b, {})
    with pytest.raises(NotProvable, match="graph input 'x'"):
        head_model(tuned, "embedding", np.float32, ["logits"])
    x = tiny_data(params, n=8)["x"]
    sample = ArrayDataset(inputs={"x": x}, labels=np.zeros(8, np.int64), groups=None, source="test")
    with staged_model(tuned, tmp_path / "o.onnx", external_data=False) as staged:
        result = verify_written(staged.path, spec, W, b, sample, CPU, original=model, scope="head")
    assert result.scope == "full" and result.max_error < 1e-5


def test_changed_region_is_the_head_only(tmp_path):
    model, spec, W, b, _, _ = _setup(tmp_path, head="matmul_add")
    region = changed_region(model, tuned_model(model, spec, W, b, {}))
    assert region.seeds == {"fc.weight", "fc.bias"}
    assert "embedding" not in region.reached and "logits" in region.reached


def test_tune_reports_the_scope_and_verify_full_runs_the_whole_model(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    head = ntonnx.tune(model_path, tmp_path / "a.onnx", data=data_path)
    full = ntonnx.tune(model_path, tmp_path / "b.onnx", data=data_path, run=ntonnx.RunOptions(verify="full"))
    assert head.verification.scope == "head" and full.verification.scope == "full"
    assert head.to_dict()["verification"]["scope"] == "head"
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_tune_from_saved_activations_verifies_on_their_embeddings(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    acts = ntonnx.extract(model_path, data_path, save_to=tmp_path / "acts.npz")
    result = ntonnx.tune(model_path, tmp_path / "t.onnx", activations=tmp_path / "acts.npz")
    assert result.verification.scope == "head"
    assert result.verification.n_samples == min(64, len(acts))


def test_verify_option_is_checked():
    with pytest.raises(ntonnx.UsageError, match="--verify must be one of head, full"):
        ntonnx.RunOptions(verify="none")
