"""Feature tables (CSV, Parquet, JSONL): the model is fed exactly the table's values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_builders import passthrough_classifier, save

import ntonnx
from ntonnx import DataError, DataOptions

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture
def features(tmp_path):
    """40 rows: six feature columns f0..f5 (first two ints), a note column, class names, groups."""
    rng = np.random.default_rng(3)
    n = 40
    x = rng.normal(size=(n, 6))
    x[:, :2] = rng.integers(-5, 5, size=(n, 2))
    names = np.array(["ant", "bee", "cow"])[rng.permutation(np.arange(n) % 3)]
    columns = {f"f{i}": x[:, i] for i in range(6)}
    columns |= {"note": ["n"] * n, "label": names.tolist(), "group": rng.integers(0, 4, n).tolist()}
    return columns, x, names


def write_csv(path, columns):
    names = list(columns)
    lines = [",".join(names)] + [",".join(str(columns[c][i]) for c in names) for i in range(len(columns[names[0]]))]
    path.write_text("\n".join(lines) + "\n")
    return path


def model_for(tmp_path, inputs, n_classes=3):
    return save(passthrough_classifier(inputs, n_classes=n_classes), tmp_path / "model.onnx")


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_feature_prefix_feeds_the_table_values(tmp_path, features, kind):
    columns, x, names = features
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        write_csv(path, columns)
    elif kind == "parquet":
        pq.write_table(pa.table(columns), path, row_group_size=7)
    else:
        rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in columns.items()} for i in range(40)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = model_for(tmp_path, [("x", np.float32, ["N", 6])])
    options = DataOptions(feature_prefix="f")
    acts = ntonnx.extract(model, path, data_options=options, run=ntonnx.RunOptions(batch_size=16))
    np.testing.assert_array_equal(acts.embeddings, x.astype(np.float32))
    np.testing.assert_array_equal(acts.labels, np.searchsorted(["ant", "bee", "cow"], names))
    result = ntonnx.evaluate(model, path, data_options=options)
    assert result.classes == {"ant": 0, "bee": 1, "cow": 2}
    assert sum(result.metrics.group_sizes.values()) == 40


def test_feature_list_order_and_reshape(tmp_path, features):
    columns, x, _ = features
    path = write_csv(tmp_path / "data.csv", columns)
    model = model_for(tmp_path, [("x", np.float32, ["N", 2, 2])])
    options = DataOptions(features=("f5", "f0", "f3", "f1"), classes=("cow", "bee", "ant"))
    acts = ntonnx.extract(model, path, data_options=options)
    np.testing.assert_array_equal(acts.embeddings, x[:, [5, 0, 3, 1]].astype(np.float32))


def test_one_column_per_input_with_list_cells(tmp_path):
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 100, size=(10, 4))
    scalar = rng.normal(size=10)
    table = pa.table({"ids": seq.tolist(), "w": scalar, "label": rng.integers(0, 2, 10)})
    pq.write_table(table, tmp_path / "d.parquet")
    model = model_for(tmp_path, [("ids", np.int64, ["N", 4]), ("w", np.float32, ["N", 1])], n_classes=2)
    acts = ntonnx.extract(model, tmp_path / "d.parquet", run=ntonnx.RunOptions(batch_size=3))
    expected = np.concatenate([seq, scalar[:, None]], axis=1).astype(np.float32)
    np.testing.assert_array_equal(acts.embeddings, expected)


@pytest.mark.parametrize(
    ("edit", "options", "message"),
    [
        ("nan", {}, r"column 'f2' at row 13 is NaN or Inf"),
        ("blank", {}, r"column 'f4' is empty at row 21"),
        ("blank_label", {}, r"column 'label' is empty at row 5"),
        ("none", {"features": ("f0", "g9")}, r"has no column 'g9' \(columns: .*\); pass --features"),
        ("none", {"feature_prefix": "zz"}, r"has no column starting with 'zz'"),
        ("none", {"label_column": "y"}, r"has no column 'y' .*; pass --label-column"),
        ("none", {"features": ("f0", "f1")}, r"model input 'x' needs \(N, 6\) per batch; 2 feature columns"),
        ("bad_name", {"classes": ("ant", "bee", "cow")}, r"column 'label' at row 3 is 'yak', not one of the classes"),
    ],
)
def test_table_errors_name_row_and_column(tmp_path, features, edit, options, message):
    columns, _, _ = features
    columns = {k: list(v) for k, v in columns.items()}
    if edit == "nan":
        columns["f2"][13] = "nan"
    elif edit == "blank":
        columns["f4"][21] = ""
    elif edit == "blank_label":
        columns["label"][5] = ""
    elif edit == "bad_name":
        columns["label"][3] = "yak"
    path = write_csv(tmp_path / "data.csv", columns)
    model = model_for(tmp_path, [("x", np.float32, ["N", 6])])
    defaults = {"feature_prefix": "f"} if not {"features", "feature_prefix"} & set(options) else {}
    with pytest.raises(DataError, match=message):
        ntonnx.extract(model, path, data_options=DataOptions(**(defaults | options)))


def test_uneven_lists_and_missing_input_column(tmp_path):
    pq.write_table(pa.table({"ids": [[1, 2], [3, 4], [5]], "label": [0, 1, 0]}), tmp_path / "d.parquet")
    model = model_for(tmp_path, [("ids", np.int64, ["N", 2])], n_classes=2)
    with pytest.raises(DataError, match=r"column 'ids' at row 2 has 1 values, row 0 has 2"):
        ntonnx.extract(model, tmp_path / "d.parquet")
    two_inputs = model_for(tmp_path, [("ids", np.int64, ["N", 2]), ("mask", np.int64, ["N", 2])], n_classes=2)
    with pytest.raises(DataError, match=r"has no column for model input 'mask' \(columns: \['ids', 'label'\]\)"):
        ntonnx.extract(two_inputs, tmp_path / "d.parquet")


def test_unknown_suffix_asks_for_format(tmp_path):
    (tmp_path / "data.txt").write_text("x,label\n1,0\n")
    model = model_for(tmp_path, [("x", np.float32, ["N", 1])], n_classes=2)
    with pytest.raises(DataError, match=r"cannot tell the format of data '.*data.txt'.*pass --format"):
        ntonnx.extract(model, tmp_path / "data.txt")


def test_csv_column_that_looks_integer_in_its_first_block(tmp_path):
    n = 250_000  # > 1 MiB, so pyarrow reads several blocks; only the last row is fractional
    values = np.arange(n, dtype=np.float64) % 97
    values[-1] = 0.25
    path = tmp_path / "big.csv"
    path.write_text("v,label\n" + "".join(f"{int(v)},{i % 2}\n" for i, v in enumerate(values[:-1])) + "0.25,1\n")
    model = model_for(tmp_path, [("v", np.float32, ["N", 1])], n_classes=2)
    acts = ntonnx.extract(model, path, run=ntonnx.RunOptions(batch_size=8192))
    np.testing.assert_array_equal(acts.embeddings[:, 0], values.astype(np.float32))
