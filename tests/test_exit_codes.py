"""Issue 9: memory bombs (cases 12–15), names and files (11, 20, 21), and failures that were internal errors (exit 1).

Each case goes through the real CLI: one stderr line, the documented exit code, no traceback, the
inputs unchanged, nothing written but ``-o``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data
from click.testing import CliRunner
from conftest import sha256
from data_builders import passthrough_classifier, save
from ntonnx_cli.main import main
from onnx import TensorProto, helper, numpy_helper

import ntonnx
from ntonnx.method.solve import afr_weights

USAGE, MODEL, DATA = 2, 3, 4


def run(*args) -> tuple[int, str]:
    """Exit code and stderr; a failure must print exactly one line on stderr, no traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    lines = result.stderr.strip().splitlines()
    if result.exit_code != 0:
        assert len(lines) == 1 and lines[0].startswith("ntonnx: error:"), result.stderr
        assert lines[0].isprintable(), lines[0]
    return result.exit_code, result.stderr.strip()


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def tiny(tmp_path):
    model, params = tiny_classifier()
    onnx.save(model, tmp_path / "m.onnx")
    data = tiny_data(params)
    np.savez(tmp_path / "d.npz", **data)
    return tmp_path, data


def _csv(path: Path, labels, x, encoding="utf-8", header=None) -> Path:
    header = header or "label," + ",".join(f"f{i}" for i in range(x.shape[1]))
    rows = [header] + [f"{label}," + ",".join(f"{v:.6f}" for v in row) for label, row in zip(labels, x, strict=True)]
    path.write_bytes(("\n".join(rows) + "\n").encode(encoding))
    return path


# -- the exit-1 list ------------------------------------------------------------------------------


def test_negative_seed_is_a_usage_error(tiny):
    folder, _ = tiny
    code, line = run("tune", folder / "m.onnx", "--data", folder / "d.npz", "-o", folder / "o.onnx", "--seed", "-1")
    assert code == USAGE and "--seed" in line


@pytest.mark.parametrize("method", ["neurontune", "auto"])
def test_one_sample_per_class_is_a_data_error(tiny, method):
    folder, data = tiny
    rows = [int(np.flatnonzero(data["labels"] == c)[0]) for c in range(3)]
    np.savez(folder / "one.npz", x=data["x"][rows], labels=data["labels"][rows])
    before = listing(folder)
    code, line = run("tune", folder / "m.onnx", "--data", folder / "one.npz", "-o", folder / "o.onnx", "--method",
                     method)  # fmt: skip
    assert code == DATA and "too small to split" in line and "0: 1, 1: 1, 2: 1" in line
    assert listing(folder) == before


def test_latin1_label_names_in_a_csv_are_a_data_error(tiny):
    folder, data = tiny
    names = np.array(["caf\xe9", "na\xefve", "z"])[data["labels"]]
    path = _csv(folder / "latin1.csv", names, data["x"], encoding="latin-1")
    code, line = run("evaluate", folder / "m.onnx", "--data", path)
    assert code == DATA and "not UTF-8" in line and "column 'label'" in line


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_utf16_csv_is_a_data_error_on_one_printable_line(tiny, encoding):
    folder, data = tiny
    path = _csv(folder / "u16.csv", data["labels"], data["x"], encoding=encoding)
    code, line = run("evaluate", folder / "m.onnx", "--data", path)
    assert code == DATA and "\x00" not in line
    if encoding == "utf-16":  # with a byte-order mark: named
        assert "UTF-16" in line


def test_duplicate_csv_column_names_are_a_data_error(tiny):
    folder, data = tiny
    path = _csv(folder / "dup.csv", data["labels"], data["x"], header="label,f0,f0,f2,f3,f4,f5")
    code, line = run("evaluate", folder / "m.onnx", "--data", path)
    assert code == DATA and "column 'f0' more than once" in line


def test_an_extra_scalar_output_does_not_stop_tune(tmp_path):
    model, params = tiny_classifier()
    model.graph.node.append(helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="sum"))
    model.graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, []))
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    args = ["tune", tmp_path / "m.onnx", "--data", tmp_path / "d.npz", "-o", tmp_path / "o.onnx", "--output", "logits"]
    assert run(*args)[0] == 0
    assert run("evaluate", tmp_path / "m.onnx", "--data", tmp_path / "d.npz", "--output", "logits")[0] == 0


def test_afr_with_a_huge_gamma_writes_a_verified_model(sample, tmp_path):
    # exp(-1000 p) underflowed to 0 for every sample: 0/0 weights, a NaN head, "differ by nan" (exit 5)
    code, stderr = run("tune", sample["model"], "--data", sample["heldout"], "-o", tmp_path / "o.onnx", "--method",
                       "afr", "--afr-gamma", "1000")  # fmt: skip
    assert code == 0 and "Warning" not in stderr
    logits = np.array([[9.0, -9.0], [8.0, -8.0], [-1.0, 1.0]])
    weights = afr_weights(logits, np.array([0, 0, 1]), 1e6)
    assert np.all(np.isfinite(weights)) and weights.sum() == pytest.approx(3.0)


def test_a_latin1_path_is_shown_escaped_not_as_empty(tiny):
    folder, _ = tiny
    name = os.fsdecode(b"caf\xe9.npz")
    os.rename(folder / "d.npz", folder / name)
    assert run("evaluate", folder / "m.onnx", "--data", folder / name)[0] == 0
    code, line = run("evaluate", folder / "m.onnx", "--data", folder / os.fsdecode(b"gon\xe9.npz"))
    assert code == DATA and "gon\\xe9.npz" in line and "does not exist" in line


def test_a_latin1_image_path_in_a_latin1_manifest_is_read(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    model = save(passthrough_classifier([("x", np.float32, ["N", 3, 4, 4])], n_classes=2), tmp_path / "m.onnx")
    for i, name in enumerate([b"caf\xe9.png", b"b.png"]):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / os.fsdecode(name), format="PNG")
    (tmp_path / "list.csv").write_bytes(b"path,label\ncaf\xe9.png,0\nb.png,1\n")
    assert run("evaluate", model, "--data", tmp_path / "list.csv")[0] == 0


@pytest.mark.parametrize("where", ["npz", "csv"])
def test_an_oversized_label_is_named_not_wrapped_to_a_negative(tiny, where):
    folder, data = tiny
    labels = data["labels"].astype(np.float64)
    labels[3] = 1e19
    if where == "npz":
        np.savez(folder / "big.npz", x=data["x"], labels=labels)
        path = folder / "big.npz"
    else:
        path = _csv(folder / "big.csv", ["99999999999999999999", *data["labels"][1:].tolist()], data["x"])
    code, line = run("evaluate", folder / "m.onnx", "--data", path)
    assert code == DATA and "too large" in line and "-9223372036854775808" not in line


def test_onnxruntime_logs_no_line_of_its_own_before_ntonnx_error(tmp_path):
    # a Reshape that fails at run time: onnxruntime logged a red "[E:onnxruntime:...]" line first
    model, params = tiny_classifier()
    model.graph.initializer.extend([numpy_helper.from_array(np.array([5, -1], np.int64), "s1"),
                                    numpy_helper.from_array(np.array([-1, 6], np.int64), "s2")])  # fmt: skip
    model.graph.node[0].input[0] = "x2"
    model.graph.node.insert(0, helper.make_node("Reshape", ["x1", "s2"], ["x2"]))
    model.graph.node.insert(0, helper.make_node("Reshape", ["x", "s1"], ["x1"]))
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    command = ["evaluate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz")]
    proc = subprocess.run(
        [sys.executable, "-m", "ntonnx_cli.main", *command],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == DATA
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntonnx: error:") and "\x1b" not in proc.stderr, proc.stderr


# -- case 12: a synthetic verification sample the model's declared dims make huge -------------------


@pytest.mark.parametrize("length", [16_000_000, 10**10])
def test_declared_dims_cannot_make_a_huge_verification_sample(tmp_path, length):
    model, _ = tiny_classifier(in_dim=8)
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, length]))
    model.graph.node.insert(0, helper.make_node("ReduceMean", ["x"], ["xm"], axes=[2], keepdims=0))
    model.graph.node[1].input[0] = "xm"
    onnx.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    acts = ntonnx.Activations(
        embeddings=rng.random((40, 8), dtype=np.float32), logits=rng.normal(size=(40, 3)).astype(np.float32),
        labels=np.arange(40) % 3, groups=None, model_digest=sha256(tmp_path / "m.onnx"), provider="CPU",
    )  # fmt: skip
    acts.save(tmp_path / "a.npz")
    before = listing(tmp_path)
    code, line = run("tune", tmp_path / "m.onnx", "--activations", tmp_path / "a.npz", "-o", tmp_path / "o.onnx",
                     "--method", "llr", "--verify", "full")  # fmt: skip
    assert code == MODEL and "bytes" in line and "--data" in line
    assert listing(tmp_path) == before
    # the default head-scope verification runs the head on the saved embeddings: no model inputs needed
    code, line = run("tune", tmp_path / "m.onnx", "--activations", tmp_path / "a.npz", "-o", tmp_path / "o.onnx",
                     "--method", "llr")  # fmt: skip
    assert code == 0, line


# -- case 13: a tokenizer's truncation length on a model with a free sequence axis -------------------


def test_a_tokenizer_truncating_at_four_billion_tokens_is_refused(tmp_path):
    pytest.importorskip("tokenizers")
    from test_sources_text import write_tokenizer

    tokenizer = write_tokenizer(tmp_path / "tok.json")
    spec = json.loads(tokenizer.read_text())
    spec["truncation"] = {"direction": "Right", "max_length": 2**32 - 1, "strategy": "LongestFirst", "stride": 0}
    tokenizer.write_text(json.dumps(spec))
    model = save(passthrough_classifier([("input_ids", np.int64, ["N", "S"])], n_classes=2, dim=8), tmp_path / "m.onnx")
    (tmp_path / "t.csv").write_text("text,label\nthe cat,0\na dog,1\n")
    code, line = run("evaluate", model, "--data", tmp_path / "t.csv", "--tokenizer", tokenizer)
    assert code == DATA and "4294967295" in line and "--max-length" in line


# -- case 14: an image that decodes or resizes to billions of pixels -------------------------------


@pytest.mark.parametrize("options", [["--resize", "16"], ["--resize", "16", "--crop", "16"], []])
def test_a_thin_png_is_refused_before_decoding_or_resizing(tmp_path, options):
    Image = pytest.importorskip("PIL.Image")
    width = 4_000_000 if options else 100_000_000
    (tmp_path / "img" / "a").mkdir(parents=True)
    (tmp_path / "img" / "b").mkdir()
    Image.new("L", (width, 1)).save(tmp_path / "img" / "a" / "thin.png")
    Image.new("L", (16, 16)).save(tmp_path / "img" / "b" / "ok.png")
    model = save(passthrough_classifier([("x", np.float32, ["N", 1, 16, 16])], n_classes=2), tmp_path / "m.onnx")
    code, line = run("evaluate", model, "--data", tmp_path / "img", *options, *([] if options else ["--crop", "16"]))
    assert code == DATA and "thin.png" in line and "pixels, over the cap" in line


# -- case 15: .npz arrays the model does not need are never read ---------------------------------


def _npz_with_declared(path: Path, arrays: dict, declared: dict[str, tuple]) -> None:
    """An .npz whose ``declared`` members have a header claiming that shape but (almost) no data."""
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as archive:
        for name, shape in declared.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
                member.write(b"\0" * 64)


def test_an_unused_huge_npz_member_is_never_read_and_a_used_one_is_refused(tiny):
    folder, data = tiny
    _npz_with_declared(folder / "extra.npz", data, {"notes": (1 << 40,)})
    code, stderr = run("evaluate", folder / "m.onnx", "--data", folder / "extra.npz")
    assert code == 0 and "ignoring arrays ['notes']" in stderr
    _npz_with_declared(folder / "bomb.npz", {"labels": data["labels"]}, {"x": (200, 1 << 40)})
    code, line = run("evaluate", folder / "m.onnx", "--data", folder / "bomb.npz")
    assert code == DATA and "'x' declares shape (200, 1099511627776)" in line and "more than this machine" in line


# -- cases 11, 20, 21 ----------------------------------------------------------------------------


def test_manifest_paths_may_leave_its_folder_but_must_be_regular_files(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "images").mkdir()
    (tmp_path / "lists").mkdir()
    for i in range(2):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"{i}.png")
    model = save(passthrough_classifier([("x", np.float32, ["N", 3, 4, 4])], n_classes=2), tmp_path / "m.onnx")
    manifest = tmp_path / "lists" / "val.csv"
    manifest.write_text(f"path,label\n../images/0.png,0\n{tmp_path / 'images' / '1.png'},1\n")
    assert run("evaluate", model, "--data", manifest)[0] == 0
    os.mkfifo(tmp_path / "images" / "pipe.png")
    manifest.write_text("path,label\n../images/0.png,0\n../images/pipe.png,1\n")
    code, line = run("evaluate", model, "--data", manifest)
    assert code == DATA and "pipe.png' at row 1 is not a regular file" in line


@pytest.mark.parametrize("form", ["csv", "npz"])
def test_with_classes_numeric_labels_are_names(tmp_path, form):
    model = save(passthrough_classifier([("x", np.float32, ["N", 2])], n_classes=4), tmp_path / "m.onnx")
    angles = np.array([0, 90, 180, 270] * 5)
    x = np.random.default_rng(0).normal(size=(20, 2))
    if form == "csv":
        path = _csv(tmp_path / "rot.csv", angles, x)
    else:
        path = tmp_path / "rot.npz"
        np.savez(path, x=x.astype(np.float32), labels=angles)
    result = CliRunner().invoke(main, ["evaluate", model, "--data", str(path), "--classes", "0,90,180,270", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"] == {"0": 0, "90": 1, "180": 2, "270": 3}


def test_npy_folder_feeds_an_input_named_with_a_slash(tmp_path):
    model, params = tiny_classifier()
    model.graph.input[0].name = "gpu_0/data_0"
    model.graph.node[0].input[0] = "gpu_0/data_0"
    onnx.save(model, tmp_path / "m.onnx")
    data = tiny_data(params)
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "gpu_0__data_0.npy", data["x"])
    np.save(tmp_path / "arrays" / "labels.npy", data["labels"])
    assert run("evaluate", tmp_path / "m.onnx", "--data", tmp_path / "arrays")[0] == 0
    os.remove(tmp_path / "arrays" / "gpu_0__data_0.npy")
    np.save(tmp_path / "arrays" / "x.npy", data["x"])
    code, line = run("evaluate", tmp_path / "m.onnx", "--data", tmp_path / "arrays")
    assert code == DATA and "file 'gpu_0__data_0.npy'" in line
