"""What the user sees from the CLI: the HTML report and figure, the class-order check, many classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from ntonnx_cli.main import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _image_folder(sample, root, names: dict[int, str], per_class: int = 60):
    """The sample's held-out images as PNGs under root/<names[label]>/ (pixels are k/255: lossless)."""
    from PIL import Image

    data = np.load(sample["heldout"])
    for label, name in names.items():
        (root / name).mkdir(parents=True)
        images = data["image"][data["labels"] == label][:per_class]
        for i, image in enumerate(images):
            pixels = np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def test_swapped_class_folders_are_refused_with_the_classes_to_pass(sample, tmp_path):
    pytest.importorskip("PIL")
    # Model class 0 is digits 0-4 ("low"); sorted folder order puts "high" first: the reverse.
    folder = _image_folder(sample, tmp_path / "images", {0: "low", 1: "high"})
    out = tmp_path / "tuned.onnx"
    result = invoke("tune", sample["model"], "--data", folder, "--scale", "1/255", "-o", out)
    assert result.exit_code == 4, result.output
    assert "pass --classes low,high" in result.output
    assert not out.exists()
    fixed = invoke("tune", sample["model"], "--data", folder, "--scale", "1/255", "--classes", "low,high", "-o", out)
    assert fixed.exit_code == 0, fixed.output


def test_tune_writes_html_and_plot_and_report_redraws_the_json(sample, tmp_path):
    out, report, html, plot = (tmp_path / name for name in ("t.onnx", "r.json", "r.html", "p.png"))
    args = ["--data", sample["heldout"], "--eval-data", sample["test"], "-o", out, "--report", report]
    result = invoke("tune", sample["model"], *args, "--report-html", html, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:4] == b"\x89PNG" and "data:image/png;base64," in html.read_text()
    redrawn = tmp_path / "again.html"
    again = invoke("report", report, "-o", redrawn)
    assert again.exit_code == 0, again.output
    # Same JSON, same page: the figures carry no timestamps.
    assert redrawn.read_text() == html.read_text()


def test_report_refuses_a_json_that_is_not_a_tune_report(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"model": "m.onnx"}))
    result = invoke("report", path)
    assert result.exit_code == 4 and "is not a tune report" in result.output


def test_1000_classes_with_heldout_covering_50_keeps_the_other_rows(tmp_path):
    """ImageNet-sized head, held-out samples of 50 classes: those rows re-fit, 950 bit-identical, few log lines."""
    import onnx
    from builders import tiny_classifier
    from onnx import numpy_helper

    model, params = tiny_classifier(n_classes=1000, dim=16, in_dim=16, seed=3)
    onnx.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60000, 16)).astype(np.float32)
    logits = np.maximum(x @ params["A"], 0) @ params["W"].T + params["b"]
    labels = (logits + rng.normal(scale=2.0, size=logits.shape)).argmax(axis=1)
    present = np.argsort(-np.bincount(labels, minlength=1000), kind="stable")[:50]
    rows = np.concatenate([np.flatnonzero(labels == c)[:20] for c in present])
    np.savez(tmp_path / "d.npz", x=x[rows], labels=labels[rows])

    # 30 iterations: the solve stops early (one ConvergenceWarning, as a log line) and the test stays fast.
    args = ["--data", tmp_path / "d.npz", "-o", tmp_path / "t.onnx", "--json", "--max-iter", "30"]
    result = invoke("tune", tmp_path / "m.onnx", *args)
    assert result.exit_code == 0, result.output
    log = result.stderr.splitlines()
    assert len(log) <= 3 and all(line.startswith("ntonnx: WARNING: ") for line in log), log
    assert any("samples of 50 of the model's 1000 classes" in line for line in log)
    assert any("raise --max-iter or --l2" in line for line in log)

    def head(path):
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
        return inits["fc.weight"], inits["fc.bias"]

    (W0, b0), (W1, b1) = head(tmp_path / "m.onnx"), head(tmp_path / "t.onnx")
    other = np.setdiff1d(np.arange(1000), present)
    assert np.array_equal(W1[other], W0[other]) and np.array_equal(b1[other], b0[other])
    assert not np.array_equal(W1[present], W0[present])
    report = json.loads(result.stdout)
    assert report["kept_classes"] == other.tolist()
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "t.onnx").metadata_props}
    assert json.loads(metadata["ntonnx.kept_classes"]) == other.tolist()


def test_integer_class_folder_out_of_range_names_the_folder(sample, tmp_path):
    pytest.importorskip("PIL")
    folder = _image_folder(sample, tmp_path / "images", {0: "0", 1: "7"}, per_class=2)
    result = invoke("tune", sample["model"], "--data", folder, "--scale", "1/255", "-o", tmp_path / "t.onnx")
    assert result.exit_code == 4
    assert "class folder '7' is 7, outside the model's classes 0..1" in result.output and "row" not in result.output


def test_report_html_may_not_overwrite_an_input_or_another_output(sample, tmp_path):
    out = tmp_path / "t.onnx"
    args = ["--data", sample["heldout"], "-o", out]
    clash = invoke("tune", sample["model"], *args, "--report-html", sample["heldout"])
    assert clash.exit_code == 2 and "--report-html" in clash.output and not out.exists()
    same = invoke("tune", sample["model"], *args, "--report-html", tmp_path / "r", "--plot", tmp_path / "r")
    assert same.exit_code == 2 and "give each output its own path" in same.output and not out.exists()
