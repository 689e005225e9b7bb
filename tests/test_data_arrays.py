"""Model-ready arrays: an .npz in memory, or a folder of .npy files memory-mapped and read per batch."""

from __future__ import annotations

import numpy as np
import pytest
from builders import tiny_classifier, tiny_data

import ntonnx
from ntonnx import DataError, DataOptions
from ntonnx.data.dataset import InputSpec
from ntonnx.data.open import open_dataset


@pytest.fixture
def model(tmp_path):
    proto, params = tiny_classifier()
    path = tmp_path / "model.onnx"
    import onnx

    onnx.save(proto, str(path))
    return str(path), params


def write_npy_folder(folder, arrays):
    folder.mkdir()
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    return folder


def test_npy_folder_is_memory_mapped_and_matches_npz(tmp_path, model):
    path, params = model
    arrays = tiny_data(params, n=150)
    np.savez(tmp_path / "data.npz", **arrays)
    folder = write_npy_folder(tmp_path / "arrays", arrays | {"x": arrays["x"].astype(np.float64)})
    spec = [InputSpec("x", np.dtype(np.float32), ("N", 6))]
    dataset = open_dataset(folder, spec, 3)
    assert isinstance(dataset.inputs["x"], np.memmap)  # nothing read yet
    from_npz = ntonnx.extract(path, tmp_path / "data.npz", run=ntonnx.RunOptions(batch_size=32))
    from_npy = ntonnx.extract(path, folder, run=ntonnx.RunOptions(batch_size=32))
    np.testing.assert_array_equal(from_npy.embeddings, from_npz.embeddings)
    np.testing.assert_array_equal(from_npy.groups, arrays["groups"])
    assert (
        ntonnx.evaluate(path, folder).metrics.accuracy == ntonnx.evaluate(path, tmp_path / "data.npz").metrics.accuracy
    )


@pytest.mark.parametrize("form", ["npz", "npy"])
def test_nan_named_by_sample(tmp_path, model, form):
    path, params = model
    arrays = tiny_data(params, n=100)
    arrays["x"][71, 2] = np.inf
    data = tmp_path / "data.npz"
    if form == "npz":
        np.savez(data, **arrays)
    else:
        data = write_npy_folder(tmp_path / "arrays", arrays)
    with pytest.raises(DataError, match=r"array 'x': sample 71 contains NaN or Inf"):
        ntonnx.extract(path, data, run=ntonnx.RunOptions(batch_size=16))


def test_npy_folder_errors(tmp_path, model):
    path, params = model
    arrays = tiny_data(params, n=20)
    short = write_npy_folder(tmp_path / "short", arrays | {"labels": arrays["labels"][:19]})
    with pytest.raises(DataError, match=r"array 'x' has 20 samples, 'labels' has 19"):
        ntonnx.extract(path, short)
    unlabelled = write_npy_folder(tmp_path / "unlabelled", {"x": arrays["x"]})
    with pytest.raises(DataError, match=r"has no 'labels' array \(arrays: \['x'\]\)"):
        ntonnx.extract(path, unlabelled)
    wrong = write_npy_folder(tmp_path / "wrong", {"inp": arrays["x"], "labels": arrays["labels"]})
    with pytest.raises(DataError, match=r"has no array for model input 'x' \(arrays: \['inp', 'labels'\]"):
        ntonnx.extract(path, wrong)
    empty = write_npy_folder(tmp_path / "empty", {"x": arrays["x"][:0], "labels": arrays["labels"][:0]})
    with pytest.raises(DataError, match=r"has zero samples"):
        ntonnx.extract(path, empty)
    with pytest.raises(DataError, match=r"data folder '.*nothing' does not exist"):
        ntonnx.extract(path, tmp_path / "nothing", data_options=DataOptions(format="npy"))


def test_class_names_map_the_same_way_in_every_set(tmp_path, model):
    path, params = model
    arrays = tiny_data(params, n=120)
    names = np.array(["cat", "dog", "emu"])
    np.savez(tmp_path / "heldout.npz", **(arrays | {"labels": names[arrays["labels"]]}))
    order = np.argsort(-arrays["labels"], kind="stable")  # 'emu' rows first: order of appearance differs
    np.savez(tmp_path / "tuning.npz", x=arrays["x"][order], labels=names[arrays["labels"][order]])
    result = ntonnx.tune(path, tmp_path / "out.onnx", data=tmp_path / "heldout.npz", tune_data=tmp_path / "tuning.npz")
    assert result.to_dict()["classes"] == {"cat": 0, "dog": 1, "emu": 2}
    np.savez(tmp_path / "indices.npz", **arrays)
    by_name, by_index = ntonnx.evaluate(path, tmp_path / "heldout.npz"), ntonnx.evaluate(path, tmp_path / "indices.npz")
    assert by_name.classes == {"cat": 0, "dog": 1, "emu": 2} and by_index.classes is None
    assert by_name.metrics == by_index.metrics

    two = arrays["labels"] < 2  # a tuning set without 'emu' is refused by name, not mis-mapped
    np.savez(tmp_path / "partial.npz", x=arrays["x"][two], labels=names[arrays["labels"][two]])
    with pytest.raises(DataError, match=r"partial.npz': class 'emu' \(index 2\) has no samples"):
        ntonnx.tune(path, tmp_path / "out2.onnx", data=tmp_path / "heldout.npz", tune_data=tmp_path / "partial.npz")
    with pytest.raises(DataError, match=r"holds 2 class names \(cat, dog\) for a model with 3 classes"):
        ntonnx.extract(path, tmp_path / "partial.npz")
