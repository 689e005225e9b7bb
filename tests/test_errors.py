"""The bad-input matrix: every case through the real CLI ends in one line, its exit code, no change.

Models: not a classifier, no linear head, two equally plausible heads, run-time weights, a missing
or truncated external-data file, an opset onnxruntime does not know, outputs without a batch dim.
Options and output paths: an unwritable output directory, -o naming an input. (Missing, empty,
garbled and directory model paths, and most option errors, are in test_cli.py; SIGINT/SIGKILL in
test_signals.py; random mutations in test_fuzz.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data
from click.testing import CliRunner
from conftest import sha256
from ntonnx_cli.main import main
from onnx import TensorProto, helper, numpy_helper

USAGE, MODEL, DATA = 2, 3, 4


def run(*args) -> tuple[int, str]:
    """Exit code and the error line; a failure must print exactly one line on stderr."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code == 0:
        return 0, ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("ntonnx: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return result.exit_code, lines[0]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def _graph(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.fixture
def data(tmp_path) -> Path:
    _, params = tiny_classifier()
    path = tmp_path / "d.npz"
    np.savez(path, **tiny_data(params))
    return path


def test_valid_onnx_that_is_not_a_classifier(tmp_path, data):
    model = _graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", ["N", 6])], [_vi("y", ["N", 6])])
    path = _save(model, tmp_path / "relu.onnx")
    code, line = run("tune", path, "--data", data, "-o", tmp_path / "o.onnx")
    assert code == MODEL
    assert "no linear head" in line and "Relu node 'relu'" in line and "--head-node" in line


def test_head_weights_computed_at_run_time(tmp_path, data):
    # the "weight" is a graph input: nothing to re-solve
    model = _graph(
        [helper.make_node("Gemm", ["x", "w"], ["logits"], name="fc", transB=1)],
        [_vi("x", ["N", 6]), _vi("w", [3, 6])],
        [_vi("logits", ["N", 3])],
    )
    path = _save(model, tmp_path / "runtime_w.onnx")
    code, line = run("inspect", path)
    assert code == MODEL
    assert "'fc'" in line and "--head-node" in line


def test_two_equally_plausible_heads_name_both(tmp_path):
    model, _ = tiny_classifier()
    W = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc.weight"))
    model.graph.initializer.append(numpy_helper.from_array(W.copy(), "fc2.weight"))
    model.graph.node.append(helper.make_node("Gemm", ["embedding", "fc2.weight"], ["logits2"], name="fc2", transB=1))
    model.graph.output.append(_vi("logits2", ["N", 3]))
    path = _save(model, tmp_path / "two.onnx")
    code, line = run("inspect", path)
    assert code == MODEL
    assert "logits <- fc" in line and "logits2 <- fc2" in line and "--output" in line
    code, _ = run("inspect", path, "--output", "logits2")
    assert code == 0


def test_missing_and_truncated_external_data(tmp_path, data):
    model, _ = tiny_classifier()
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    blob = tmp_path / "ext.onnx.data"
    blob.write_bytes(blob.read_bytes()[:10])
    code, line = run("tune", path, "--data", data, "-o", tmp_path / "o.onnx")
    assert code == MODEL and "external data" in line
    blob.unlink()
    code, line = run("tune", path, "--data", data, "-o", tmp_path / "o.onnx")
    assert code == MODEL and "external data" in line
    assert not (tmp_path / "o.onnx").exists()


def test_opset_newer_than_onnxruntime_supports(tmp_path, data):
    model, _ = tiny_classifier()
    model.opset_import[0].version = 99
    path = _save(model, tmp_path / "future.onnx")
    code, line = run("tune", path, "--data", data, "-o", tmp_path / "o.onnx")
    assert code == MODEL
    assert "onnxruntime cannot load model" in line


def test_outputs_without_a_batch_dimension(tmp_path):
    # a single-sample model: input (6,), logits (3,) — there is no batch axis to feed samples along
    model, params = tiny_classifier(head="matmul")
    model.graph.input[0].CopyFrom(_vi("x", [6]))
    model.graph.output[0].CopyFrom(_vi("logits", [3]))
    path = _save(model, tmp_path / "nobatch.onnx")
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    code, line = run("tune", path, "--data", tmp_path / "d.npz", "-o", tmp_path / "o.onnx")
    assert code == DATA
    assert "array 'x' has shape (200, 6), model input needs rank 1" in line


def test_unwritable_output_directory(tmp_path, data):
    model, _ = tiny_classifier()
    path = _save(model, tmp_path / "m.onnx")
    for target in ("/proc/ntonnx-out.onnx", "/sys/ntonnx-out.onnx"):
        code, line = run("tune", path, "--data", data, "-o", target)
        assert code == USAGE
        assert target in line


def test_extract_refuses_to_write_over_its_inputs(tmp_path, data):
    model, _ = tiny_classifier()
    path = _save(model, tmp_path / "m.onnx")
    before = sha256(data)
    code, line = run("extract", path, "--data", data, "-o", data)
    assert code == USAGE and "is an input file" in line
    assert sha256(data) == before


def test_report_into_missing_directory_is_a_usage_error(tmp_path, data):
    model, _ = tiny_classifier()
    path = _save(model, tmp_path / "m.onnx")
    code, line = run("tune", path, "--data", data, "-o", tmp_path / "o.onnx", "--report", tmp_path / "no" / "r.json")
    assert code == USAGE and "--report" in line


def _mutated(arrays: dict, mutate) -> dict:
    arrays = {k: v.copy() for k, v in arrays.items()}
    mutate(arrays)
    return arrays


DATA_CASES = {
    "missing input array": (lambda a: a.pop("x"), "no array for model input 'x'"),
    "wrong dtype (strings)": (lambda a: a.update(x=a["x"].astype(str)), "model input needs float32"),
    "wrong shape": (lambda a: a.update(x=a["x"][:, :4]), "'x'"),
    "zero samples": (lambda a: a.update(x=a["x"][:0], labels=a["labels"][:0], groups=a["groups"][:0]), "zero samples"),
    "one class only": (lambda a: a.update(labels=np.zeros_like(a["labels"])), "bad.npz' has no samples of class"),
    "negative labels": (lambda a: a.update(labels=a["labels"] - 5), "outside the model's classes"),
    "non-integer labels": (lambda a: a.update(labels=a["labels"] + 0.5), "'labels'"),
    "labels >= C": (lambda a: a.update(labels=a["labels"] + 3), "outside the model's classes"),
    "NaN in inputs": (lambda a: a["x"].__setitem__((3, 0), np.nan), "NaN or Inf"),
    "Inf in inputs": (lambda a: a["x"].__setitem__((5, 2), np.inf), "NaN or Inf"),
    "groups of the wrong length": (lambda a: a.update(groups=a["groups"][:-1]), "'groups'"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_through_the_cli(tmp_path, case):
    mutate, message = DATA_CASES[case]
    model, params = tiny_classifier()
    path = _save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "bad.npz", **_mutated(tiny_data(params), mutate))
    before = sha256(tmp_path / "bad.npz")
    code, line = run("tune", path, "--data", tmp_path / "bad.npz", "-o", tmp_path / "o.onnx")
    assert code == DATA, line
    assert message in line
    assert not (tmp_path / "o.onnx").exists()
    assert sha256(tmp_path / "bad.npz") == before


@pytest.mark.parametrize(
    "mutate, notice",
    [
        (lambda a: a.update(notes=np.arange(200)), "ignoring arrays ['notes']"),
        (lambda a: a.update(x=a["x"].astype(np.float64)), "converting"),
    ],
    ids=["extra arrays", "float64 for float32"],
)
def test_fixable_data_runs_with_a_notice(tmp_path, mutate, notice):
    model, params = tiny_classifier()
    path = _save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", **_mutated(tiny_data(params), mutate))
    result = CliRunner().invoke(main, ["evaluate", str(path), "--data", str(tmp_path / "d.npz")])
    assert result.exit_code == 0
    assert notice in result.stderr


def test_wrong_data_format(tmp_path):
    model, _ = tiny_classifier()
    path = _save(model, tmp_path / "m.onnx")
    (tmp_path / "notes.txt").write_text("hello\n")
    code, line = run("evaluate", path, "--data", tmp_path / "notes.txt")
    assert code in (USAGE, DATA)
    assert "notes.txt" in line


def _untyped_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its output declared by name only: onnxruntime runs it, onnx.checker refuses it."""
    name = model.graph.output[0].name
    del model.graph.output[:]
    model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model


def test_input_that_already_fails_the_checker_is_tuned(tmp_path):
    """Exit 5 after the whole run before: only checker errors the rewrite introduces refuse the output."""
    from builders import head_model

    model, params = head_model(post_ops=("Softmax",))
    path = _save(_untyped_output(model), tmp_path / "untyped.onnx")
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(str(path))
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    before = sha256(path)
    result = CliRunner().invoke(
        main, ["tune", str(path), "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "o.onnx")]
    )
    assert result.exit_code == 0, result.output
    assert "fails onnx.checker as the input model does" in result.stderr
    assert sha256(path) == before
    assert onnx.load(str(tmp_path / "o.onnx")).graph.output[0] == onnx.ValueInfoProto(name="logits")


def test_checker_errors_the_rewrite_introduces_are_refused(tmp_path):
    from builders import head_model

    from ntonnx.data.dataset import ArrayDataset
    from ntonnx.errors import VerificationError
    from ntonnx.graph.heads import locate_head
    from ntonnx.graph.rewrite import tuned_model
    from ntonnx.graph.verify import verify_written

    model, params = head_model()
    spec = locate_head(model)
    written = _save(_untyped_output(tuned_model(model, spec, params["W"], params["b"], {})), tmp_path / "w.onnx")
    sample = ArrayDataset(
        inputs={"x": np.ones((2, 6), np.float32)}, labels=np.zeros(2, np.int64), groups=None, source="t"
    )
    with pytest.raises(VerificationError, match=r"written model fails onnx.checker: Field 'type'"):
        verify_written(written, spec, params["W"], params["b"], sample, ["CPUExecutionProvider"], original=model)
