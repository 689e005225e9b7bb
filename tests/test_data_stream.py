"""The streaming contract (bounded look-ahead, errors, early stop), optional extras, and the CLI."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from data_builders import passthrough_classifier, save
from ntonnx_cli.main import main

import ntonnx
from ntonnx import DataOptions, MissingDependencyError
from ntonnx.data.dataset import prefetched

Image = pytest.importorskip("PIL.Image")


def test_prefetch_looks_exactly_one_item_ahead():
    made, lock = [], threading.Lock()

    def producer():
        for i in range(6):
            with lock:
                made.append(i)
            yield i

    seen = []
    for item in prefetched(producer()):
        seen.append(item)
        # While the caller holds item k, at most item k + 1 has been made.
        assert len(made) <= item + 2
    assert seen == list(range(6))


def test_prefetch_raises_producer_errors_in_order_and_closes_on_early_stop():
    def failing():
        yield 1
        raise ValueError("bad row 7")

    stream = prefetched(failing())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="bad row 7"):
        next(stream)

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    stream = prefetched(endless())
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    assert closed.is_set()


def test_image_stream_keeps_no_batch_the_caller_let_go(tmp_path):
    """A batch dropped by the caller is freed before the next is converted (the memory bound)."""
    import weakref

    images = write_images(tmp_path / "images", per_class=3)
    model = save(passthrough_classifier([("x", np.float32, ["N", 3, 10, 10])], n_classes=2), tmp_path / "m.onnx")
    from ntonnx.data.dataset import InputSpec
    from ntonnx.data.open import open_dataset

    dataset = open_dataset(images, [InputSpec("x", np.dtype(np.float32), ("N", 3, 10, 10))], 2)
    refs, alive_while_converting = [], []
    convert = dataset.finish

    def spy(made):
        alive_while_converting.append([ref() is not None for ref in refs])
        return convert(made)

    dataset.finish = spy
    for batch in dataset.batches(2):
        refs.append(weakref.ref(batch["x"]))
        del batch  # as ModelRunner.run does once the model has run
    assert alive_while_converting == [[], [False], [False, False]]
    assert ntonnx.extract(model, images).embeddings.shape == (6, 300)


@pytest.mark.parametrize(
    ("module", "extra", "path"),
    [("PIL.Image", "images", "images"), ("pyarrow", "tables", "data.csv")],
)
def test_missing_extra_names_it(tmp_path, monkeypatch, module, extra, path):
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "b").mkdir(parents=True)
    for cls in "ab":
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / cls / "0.png")
    (tmp_path / "data.csv").write_text("x,label\n0.5,0\n")
    model = save(passthrough_classifier([("x", np.float32, ["N", 3, 4, 4])], n_classes=2), tmp_path / "m.onnx")
    if path == "data.csv":
        model = save(passthrough_classifier([("x", np.float32, ["N", 1])], n_classes=2), tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'ntonnx\[{extra}\]'"):
        ntonnx.extract(model, tmp_path / path, data_options=DataOptions(format="table" if extra == "tables" else None))


def write_images(root, classes=("cat", "dog"), per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    for c_index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            pixels[..., c_index] //= 2  # a weak class signal
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_cli_tune_on_an_image_folder_reports_the_class_mapping(tmp_path):
    images = write_images(tmp_path / "images")
    model = save(passthrough_classifier([("x", np.float32, ["N", 3, 8, 8])], n_classes=2), tmp_path / "m.onnx")
    (tmp_path / "classes.txt").write_text("dog\ncat\n")
    args = ["tune", model, "--data", str(images), "-o", str(tmp_path / "out.onnx"), "--classes"]
    args += [str(tmp_path / "classes.txt"), "--resize", "9", "--scale", "1/255", "--mean", "0.5", "--std", "0.25"]
    result = CliRunner().invoke(main, [*args, "--method", "llr", "--json", "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["classes"] == {"dog": 0, "cat": 1}
    assert report["verification"]["n_samples"] == 24  # real images, not a synthetic batch
    assert onnx.load(str(tmp_path / "out.onnx")).graph.input[0].name == "x"


def test_cli_table_extract_and_one_line_errors(tmp_path):
    rows = "\n".join(f"{i * 0.5},{-i},{'yes' if i % 2 else 'no'}" for i in range(10))
    (tmp_path / "t.csv").write_text("a,b,answer\n" + rows + "\n")
    model = save(passthrough_classifier([("x", np.float32, ["N", 2])], n_classes=2), tmp_path / "m.onnx")
    out = tmp_path / "acts.npz"
    args = ["extract", model, "--data", str(tmp_path / "t.csv"), "-o", str(out), "--label-column", "answer"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    acts = ntonnx.Activations.load(out)
    np.testing.assert_array_equal(acts.embeddings[:, 0], np.arange(10) * 0.5)
    np.testing.assert_array_equal(acts.labels, np.arange(10) % 2)  # no < yes

    (tmp_path / "t.csv").write_text("a,b,answer\n1,2,no\n3,,yes\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 4
    assert result.stderr.strip() == f"ntonnx: error: data '{tmp_path / 't.csv'}': column 'b' is empty at row 1"

    result = CliRunner().invoke(main, [*args, "--format", "image-manifest"])
    assert result.exit_code == 4
    assert result.stderr.strip().endswith(
        "model input 'x' (N, 2) is not a batch of images (N, C, H, W) or (N, H, W, C); images cannot feed it"
    )

    result = CliRunner().invoke(main, [*args, "--scale", "1/0"])
    assert result.exit_code == 2 and "--scale must be a number" in result.stderr
