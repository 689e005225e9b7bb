"""The Python API on tiny generated models: batching, splits, data checks, one-logit heads."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data

import ntonnx
from ntonnx.method.splits import stratified_split


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_models_are_fed_at_their_size(tmp_path, batch):
    model, params = tiny_classifier(batch=batch)
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    data = tiny_data(params, n=10)  # 10 is not a multiple of 4: the last batch is padded
    np.savez(tmp_path / "d.npz", **data)
    acts = ntonnx.extract(path, tmp_path / "d.npz", run=ntonnx.RunOptions(batch_size=64))
    expected = np.maximum(data["x"] @ params["A"], 0)
    np.testing.assert_allclose(acts.embeddings, expected, rtol=1e-5, atol=1e-6)
    assert acts.logits.shape == (10, 3)


def test_single_logit_sigmoid_head_is_tuned_as_binary(tmp_path):
    model, params = tiny_classifier(n_classes=1, post_op="Sigmoid")
    path = tmp_path / "binary.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "d.npz", **tiny_data(params, n=300))
    info = ntonnx.inspect_model(path)
    assert info.head.n_classes == 1 and info.head.post_ops == ["Sigmoid"]
    result = ntonnx.tune(path, tmp_path / "out.onnx", data=tmp_path / "d.npz", options=ntonnx.TuneOptions(method="llr"))
    assert result.verification.max_error <= 1e-5
    assert sorted(result.after.per_class) == [0, 1]
    tuned = onnx.load(tmp_path / "out.onnx")
    assert [d.dim_value or d.dim_param for d in tuned.graph.output[0].type.tensor_type.shape.dim] == ["N", 1]


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat([0, 1, 2], [10, 7, 1])
    first, second = stratified_split(labels, 0.5, seed=3)
    assert set(first).isdisjoint(second) and len(first) + len(second) == len(labels)
    assert np.bincount(labels[first], minlength=3).tolist() == [5, 3, 0]
    again = stratified_split(labels, 0.5, seed=3)
    np.testing.assert_array_equal(first, again[0])
    assert not np.array_equal(first, stratified_split(labels, 0.5, seed=4)[0])


def test_separate_tuning_set_is_used_as_is(tiny, tmp_path):
    model_path, data_path, params = tiny()
    tune_path = tmp_path / "tune.npz"
    np.savez(tune_path, **tiny_data(params, n=120, seed=9))
    result = ntonnx.tune(model_path, tmp_path / "o.onnx", data=data_path, tune_data=tune_path)
    assert result.n_identification == 200 and result.n_tuning == 120


def test_float64_inputs_are_converted_with_a_warning(tiny, tmp_path, caplog):
    model_path, data_path, _ = tiny()
    arrays = dict(np.load(data_path))
    arrays["x"] = arrays["x"].astype(np.float64)
    np.savez(tmp_path / "f64.npz", **arrays)
    with caplog.at_level("WARNING", logger="ntonnx"):
        acts = ntonnx.extract(model_path, tmp_path / "f64.npz")
    assert "converting" in caplog.text
    assert len(acts) == 200


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda a: a.update(labels=np.full_like(a["labels"], 3)),
            r"'labels'\[0\] = 3 is outside the model's classes 0..2",
        ),
        (lambda a: a.update(labels=a["labels"] - 1), "is outside the model's classes"),
        (lambda a: a.update(labels=a["labels"] + 0.5), "must hold integers"),
        (lambda a: a["x"].__setitem__((4, 1), np.nan), "sample 4 contains NaN or Inf"),
        (lambda a: a.update(x=a["x"][:, :5]), r"model input needs \(N, 6\)"),
        (lambda a: a.update(x=a["x"].astype(str)), "model input needs float32"),
        (lambda a: a.update(groups=a["groups"][:5]), "'groups' has 5 entries, 'labels' has 200"),
        (lambda a: a.update(x=a["x"][:0], labels=a["labels"][:0], groups=a["groups"][:0]), "zero samples"),
        (lambda a: a.pop("labels"), "has no 'labels' array"),
    ],
)
def test_bad_arrays_are_refused_with_the_array_named(tiny, tmp_path, mutate, message):
    model_path, data_path, _ = tiny()
    arrays = dict(np.load(data_path))
    mutate(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ntonnx.DataError, match=message):
        ntonnx.evaluate(model_path, tmp_path / "bad.npz")


def test_nan_threshold_is_a_usage_error():
    with pytest.raises(ntonnx.UsageError, match="--threshold must be a finite number"):
        ntonnx.TuneOptions(threshold=float("nan"))


def test_suppressing_every_active_neuron_is_refused(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    with pytest.raises(ntonnx.UsageError, match="active embedding neurons scored as spurious"):
        ntonnx.tune(model_path, tmp_path / "o.onnx", data=data_path,
                    options=ntonnx.TuneOptions(rule="any", threshold=-1e9))  # fmt: skip
    assert not (tmp_path / "o.onnx").exists()


def test_tuning_data_missing_a_class_is_refused(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    arrays = dict(np.load(data_path))
    keep = arrays["labels"] != 2
    np.savez(tmp_path / "two.npz", **{k: v[keep] for k, v in arrays.items()})
    with pytest.raises(ntonnx.DataError, match=r"two.npz' has no samples of class\(es\) \[2\]"):
        ntonnx.tune(model_path, tmp_path / "o.onnx", data=tmp_path / "two.npz")
