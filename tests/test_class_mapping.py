"""The class-order check on the original model's predictions, and the model's own class names."""

from __future__ import annotations

import json
import shlex

import numpy as np
import onnx
import pytest

import ntonnx
from ntonnx.errors import DataError
from ntonnx.graph.class_names import graph_class_names, parse_names
from ntonnx.method.class_mapping import best_class_mapping, check_class_mapping, classes_option
from ntonnx.method.metrics import predict


@pytest.fixture(scope="module")
def sample_predictions(sample) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the sample's held-out set and the real sample model's predictions on it."""
    acts = ntonnx.extract(sample["model"], sample["heldout"])
    return acts.labels, predict(acts.logits)


def test_swapped_two_class_names_are_refused_with_the_classes_to_pass(sample_predictions):
    labels, predictions = sample_predictions
    # An image folder sorted as ["high", "low"] where the model's class 0 is "low".
    swapped = 1 - labels
    with pytest.raises(DataError, match=r"pass --classes low,high$") as caught:
        check_class_mapping(swapped, predictions, 2, source="images/", class_names=["high", "low"])
    message = str(caught.value)
    assert "'high' -> model class 1, 'low' -> model class 0" in message
    assert "\n" not in message and caught.value.exit_code == 4


def test_the_right_order_passes(sample_predictions):
    labels, predictions = sample_predictions
    result = check_class_mapping(labels, predictions, 2, source="heldout.npz", class_names=["low", "high"])
    assert result.moved == [] and result.accuracy == result.best_accuracy == np.mean(labels == predictions)
    assert not result.far_better


def test_integer_labels_are_told_to_relabel(sample_predictions):
    labels, predictions = sample_predictions
    with pytest.raises(DataError, match="numbered differently from the model's outputs: relabel them"):
        check_class_mapping(1 - labels, predictions, 2, source="heldout.npz")


def test_a_confused_model_is_not_refused():
    """45% vs 55% on two classes is a weak model, not a wrong order."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    predictions = np.where(rng.random(400) < 0.45, labels, 1 - labels)
    result = best_class_mapping(labels, predictions, 2)
    assert result.moved == [0, 1] and not result.far_better


def test_two_swapped_classes_among_many_with_partial_coverage():
    """100 model classes, data on 30 of them, two of those swapped: found although accuracy barely moves."""
    rng = np.random.default_rng(1)
    present = rng.choice(100, 30, replace=False)
    labels = np.repeat(present, 20)
    predictions = np.where(rng.random(labels.size) < 0.8, labels, rng.integers(0, 100, labels.size))
    a, b = present[3], present[7]
    swapped = labels.copy()
    swapped[labels == a], swapped[labels == b] = b, a
    result = best_class_mapping(swapped, predictions, 100)
    assert result.moved == sorted([a, b]) and result.mapping[a] == b and result.mapping[b] == a
    assert result.far_better and result.best_accuracy - result.accuracy < 0.1
    names = [f"c{i}" for i in range(100)]
    with pytest.raises(DataError, match="pass --classes") as caught:
        check_class_mapping(swapped, predictions, 100, source="d", class_names=names)
    value = shlex.split(str(caught.value).rsplit("--classes ", 1)[1])[0].split(",")
    assert value[a] == f"c{b}" and value[b] == f"c{a}" and len(value) == 100


@pytest.mark.parametrize("per_class", [2, 10])
def test_labels_unrelated_to_the_predictions_are_not_a_wrong_order(per_class):
    """A model that cannot do the task (random labels over 1000 classes, predictions piled on a few
    classes, as a real ImageNet model does on out-of-domain images): chance matches are not refused."""
    rng = np.random.default_rng(2)
    labels = np.repeat(rng.choice(1000, 1000 // per_class * 2, replace=False), per_class)
    favourites = rng.choice(1000, 40, replace=False)
    predictions = favourites[np.minimum(rng.geometric(0.15, labels.size) - 1, 39)]
    result = best_class_mapping(labels, predictions, 1000)
    assert result.moved and not result.far_better
    check_class_mapping(labels, predictions, 1000, source="random")  # no error


def test_no_change_on_ties():
    """A tie (as many samples either way) keeps the data's order."""
    labels = np.array([0, 0, 1, 1])
    predictions = np.array([0, 1, 0, 1])
    assert best_class_mapping(labels, predictions, 2).moved == []


def test_classes_option_fills_free_positions():
    # data has names for 2 classes at data indices 0, 1; they fit model classes 2 and 0 of 4.
    assert classes_option({0: 2, 1: 0}, ["b", "a"], 4) == "a,class_1,b"
    assert classes_option({0: 2, 1: 0}, ["b", "a"], 4, ["x", "y", "z", "w"]) == "a,y,b"


def _zipmap_model(labels: np.ndarray) -> onnx.ModelProto:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    y = labels[np.arange(60) % len(labels)]
    return to_onnx(LogisticRegression(max_iter=200).fit(X, y), X[:1])


def test_graph_class_names_from_skl2onnx_zipmap():
    model = _zipmap_model(np.array(["setosa", "versicolor", "virginica"]))
    assert any(node.op_type == "ZipMap" for node in model.graph.node)
    assert graph_class_names(model) == ["setosa", "versicolor", "virginica"]
    assert graph_class_names(model, n_classes=3) == ["setosa", "versicolor", "virginica"]
    assert graph_class_names(model, n_classes=5) is None
    assert graph_class_names(_zipmap_model(np.array([3, 7]))) == ["3", "7"]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("id2label", json.dumps({"0": "neg", "1": "pos"}), ["neg", "pos"]),
        ("names", "{0: 'person', 1: 'bicycle'}", ["person", "bicycle"]),
        ("labels", '["cat", "dog"]', ["cat", "dog"]),
        ("labels", "cat, dog", ["cat", "dog"]),
        ("character", "a\nb\n", ["a", "b"]),
    ],
)
def test_graph_class_names_from_metadata(tiny, key, value, expected):
    model_path, _, _ = tiny()
    model = onnx.load(model_path)
    onnx.helper.set_model_props(model, {key: value})
    assert graph_class_names(model) == expected


def test_unreadable_or_gapped_metadata_gives_none(tiny):
    model_path, _, _ = tiny()
    model = onnx.load(model_path)
    assert graph_class_names(model) is None
    onnx.helper.set_model_props(model, {"id2label": json.dumps({"0": "a", "2": "c"})})
    assert graph_class_names(model) is None
    assert parse_names("{not json") is None


def test_named_labels_follow_the_models_own_class_names(tiny, tmp_path):
    """Without --classes, names the graph carries (here id2label) map in the model's order, not sorted."""
    model_path, data_path, _ = tiny()
    model = onnx.load(model_path)
    onnx.helper.set_model_props(model, {"id2label": json.dumps({"0": "emu", "1": "dog", "2": "cat"})})
    onnx.save(model, tmp_path / "named.onnx")
    arrays = dict(np.load(data_path))
    np.savez(tmp_path / "names.npz", x=arrays["x"], labels=np.array(["emu", "dog", "cat"])[arrays["labels"]])
    by_name = ntonnx.evaluate(tmp_path / "named.onnx", tmp_path / "names.npz")
    by_index = ntonnx.evaluate(tmp_path / "named.onnx", data_path)
    assert by_name.classes == {"emu": 0, "dog": 1, "cat": 2}
    assert by_name.metrics.accuracy == by_index.metrics.accuracy
    report = ntonnx.tune(tmp_path / "named.onnx", tmp_path / "t.onnx", data=tmp_path / "names.npz").to_dict()
    assert report["classes"] == {"emu": 0, "dog": 1, "cat": 2} and report["model_class_names"] == ["emu", "dog", "cat"]


def test_too_large_a_matching_is_skipped(monkeypatch):
    import ntonnx.method.class_mapping as module

    monkeypatch.setattr(module, "MAX_CELLS", 3)
    labels = np.repeat([0, 1], 20)
    result = module.best_class_mapping(labels, 1 - labels, 2)  # swapped, but not checked
    assert result.moved == [] and result.accuracy == 0.0 and not result.far_better
