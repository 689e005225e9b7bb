"""The CLI end to end on the shipped sample, and its error contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import sha256
from ntonnx_cli.main import main

from ntonnx.graph.heads import locate_head, read_head


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_inspect_reports_the_head(sample):
    result = invoke("inspect", sample["model"], "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["head"]["pattern"] == "gemm"
    assert info["head"]["n_classes"] == 2
    assert info["head"]["dim"] == 64
    assert info["inputs"][0]["name"] == "image"
    assert info["inputs"][0]["shape"][1:] == [3, 16, 16]
    text = invoke("inspect", sample["model"])
    assert "pattern gemm" in text.output and "width 64" in text.output


def test_extract_saves_embeddings_and_logits(sample, tmp_path):
    out = tmp_path / "acts.npz"
    result = invoke("extract", sample["model"], "--data", sample["test"], "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["provider"] == "CPUExecutionProvider"
    acts = np.load(out)
    labels = np.load(sample["test"])["labels"]
    assert acts["embeddings"].shape == (len(labels), 64)
    assert acts["logits"].shape == (len(labels), 2)
    np.testing.assert_array_equal(acts["labels"], labels)


def test_tune_improves_worst_group_accuracy_on_the_test_split(sample, tmp_path):
    out = tmp_path / "debiased.onnx"
    report = tmp_path / "report.json"
    before_hash = sha256(sample["model"])
    result = invoke("tune", sample["model"], "--data", sample["heldout"], "-o", out, "--report", report)
    assert result.exit_code == 0, result.output
    assert "worst-group accuracy" in result.output
    assert sha256(sample["model"]) == before_hash

    original = json.loads(invoke("evaluate", sample["model"], "--data", sample["test"], "--json").output)
    tuned = json.loads(invoke("evaluate", out, "--data", sample["test"], "--json").output)
    assert tuned["metrics"]["worst_group"] > original["metrics"]["worst_group"] + 0.05
    payload = json.loads(report.read_text())
    assert payload["options"]["method"] == "neurontune"
    assert payload["verification"]["max_error"] <= 1e-5


def test_tune_from_saved_activations_matches_tune_from_data(sample, tmp_path):
    acts = tmp_path / "acts.npz"
    assert invoke("extract", sample["model"], "--data", sample["heldout"], "-o", acts).exit_code == 0
    from_data = invoke("tune", sample["model"], "--data", sample["heldout"], "-o", tmp_path / "a.onnx", "--json")
    from_acts = invoke("tune", sample["model"], "--activations", acts, "-o", tmp_path / "b.onnx", "--json")
    a, b = json.loads(from_data.output), json.loads(from_acts.output)
    assert a["after"] == b["after"]
    heads = []
    for name in ("a.onnx", "b.onnx"):
        model = onnx.load(tmp_path / name)
        heads.append(read_head(model, locate_head(model)))
    np.testing.assert_allclose(heads[0][0], heads[1][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(heads[0][1], heads[1][1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["erm", "llr", "neurontune", "dfr", "afr"])
def test_every_method_writes_a_verified_model(sample, tmp_path, method):
    out = tmp_path / f"{method}.onnx"
    result = invoke("tune", sample["model"], "--data", sample["heldout"], "--eval-data", sample["test"],
                    "--method", method, "-o", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["verification"]["max_error"] <= payload["verification"]["tolerance"]
    onnx.checker.check_model(str(out))
    # the report's "after" column is what the written file scores when run by onnxruntime
    written = json.loads(invoke("evaluate", out, "--data", sample["test"], "--json").output)["metrics"]
    assert payload["after"]["worst_group"] == pytest.approx(written["worst_group"], abs=0.01)
    assert payload["after"]["accuracy"] == pytest.approx(written["accuracy"], abs=0.005)


def test_dfr_without_groups_says_what_is_missing(sample, tmp_path):
    arrays = dict(np.load(sample["heldout"]))
    del arrays["groups"]
    data = tmp_path / "nogroups.npz"
    np.savez(data, **arrays)
    result = invoke("tune", sample["model"], "--data", data, "--method", "dfr", "-o", tmp_path / "o.onnx")
    assert result.exit_code == 2
    assert "needs group labels" in result.output
    assert not (tmp_path / "o.onnx").exists()


def _error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "make_model, code, message",
    [
        (lambda p: p / "missing.onnx", 3, "does not exist"),
        (lambda p: (p / "garbled.onnx").write_bytes(os.urandom(512)) and p / "garbled.onnx", 3, "not a valid ONNX"),
        (lambda p: (p / "empty.onnx").write_bytes(b"") or p / "empty.onnx", 3, "is empty"),
        (lambda p: p, 3, "is a directory"),
    ],
)
def test_bad_model_gives_one_line_and_exit_code(sample, tmp_path, make_model, code, message):
    model = make_model(tmp_path)
    for args in (["inspect", model], ["evaluate", model, "--data", sample["test"]],
                 ["tune", model, "--data", sample["heldout"], "-o", tmp_path / "out.onnx"]):  # fmt: skip
        result = invoke(*args)
        assert result.exit_code == code, result.output
        assert message in _error_line(result)


@pytest.mark.parametrize(
    "make_data, message",
    [
        (lambda p: p / "missing.npz", "does not exist"),
        (lambda p: (p / "garbled.npz").write_bytes(b"PK\x03\x04garbage") and p / "garbled.npz", "not a readable .npz"),
        (
            lambda p: np.savez(p / "noinput.npz", labels=np.zeros(3, int)) or p / "noinput.npz",
            "no array for model input",
        ),
    ],
)
def test_bad_data_gives_one_line_and_exit_code(sample, tmp_path, make_data, message):
    data = make_data(tmp_path)
    result = invoke("tune", sample["model"], "--data", data, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 4, result.output
    assert message in _error_line(result)
    assert not (tmp_path / "out.onnx").exists()


def test_unknown_method_is_a_usage_error(sample, tmp_path):
    result = invoke("tune", sample["model"], "--data", sample["heldout"], "--method", "magic", "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "'--method': 'magic' is not one of" in _error_line(result)


def test_real_subprocess_round_trip(sample, tmp_path):
    out = tmp_path / "tuned.onnx"
    completed = subprocess.run(
        [sys.executable, "-m", "ntonnx_cli.main", "tune", str(sample["model"]), "--data", str(sample["heldout"]),
         "-o", str(out), "--json"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    payload = json.loads(completed.stdout)
    assert payload["out"] == str(out)
    reloaded = onnx.load(out)
    original = onnx.load(sample["model"])
    assert [i.name for i in reloaded.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in reloaded.graph.output] == [o.name for o in original.graph.output]
    assert reloaded.opset_import == original.opset_import


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--head-node", "nope"], 2, "--head-node 'nope' names no node"),
        (["--embedding", "nope"], 2, "--embedding 'nope' is not a tensor any node reads"),
        (["--output", "nope"], 2, "--output 'nope' is not a graph output"),
        (["--threshold", "nan"], 2, "--threshold must be a finite number"),
        (["--split", "1.5"], 2, "--split must be in (0, 1)"),
        (["--provider", "tpu"], 2, "--provider 'tpu' is not available"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(sample, tmp_path, extra, code, message):
    result = invoke("tune", sample["model"], "--data", sample["heldout"], "-o", tmp_path / "o.onnx", *extra)
    assert result.exit_code == code, result.output
    assert message in _error_line(result)
    assert not (tmp_path / "o.onnx").exists()


def test_output_directory_must_exist(sample, tmp_path):
    result = invoke("tune", sample["model"], "--data", sample["heldout"], "-o", tmp_path / "no" / "o.onnx")
    assert result.exit_code == 2
    assert "does not exist" in _error_line(result)


def test_output_equal_to_input_is_refused_even_with_force(sample, tmp_path):
    before = sha256(sample["model"])
    result = invoke("tune", sample["model"], "--data", sample["heldout"], "-o", sample["model"], "--force")
    assert result.exit_code == 2
    assert "is an input file" in _error_line(result)
    assert sha256(sample["model"]) == before
