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
