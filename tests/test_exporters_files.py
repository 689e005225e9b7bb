"""File layouts exporters produce: external data, models past protobuf's limit, and what the CLI says.

torch's default exporter writes ``model.onnx`` + ``model.onnx.data`` even for small models; the
output must keep that layout next to itself and never write over the input's files. Models over
2 GiB cannot be serialized as one protobuf; the code paths for them are exercised by lowering the
threshold rather than by writing 2 GiB.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from builders import head_model, tiny_data
from click.testing import CliRunner

import ntonnx
from ntonnx.data.dataset import ArrayDataset
from ntonnx.graph import model_io


def save(model: onnx.ModelProto, path, location: str | None = None):
    if location is None:
        onnx.save(model, str(path))
    else:
        onnx.save(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def data_for(params, n=120) -> ArrayDataset:
    arrays = tiny_data(params, n=n)
    return ArrayDataset(inputs={"x": arrays["x"]}, labels=arrays["labels"], groups=None, source="tiny")


def digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_external_data_stays_external_next_to_the_output(tmp_path):
    model, params = head_model()
    source = tmp_path / "in"
    source.mkdir()
    save(model, source / "model.onnx", location="model.onnx.data")
    before = digests(source)
    out = tmp_path / "out" / "tuned.onnx"
    out.parent.mkdir()
    result = ntonnx.tune(source / "model.onnx", out, data=data_for(params))
    assert result.files == [str(out), str(out) + ".data"]
    assert digests(source) == before
    written = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"tuned.onnx.data"}
    assert ntonnx.inspect_model(out).head.nodes == ["fc"]  # loads with its data


def test_single_file_stays_single_file(tmp_path):
    model, params = head_model()
    save(model, tmp_path / "model.onnx")
    result = ntonnx.tune(tmp_path / "model.onnx", tmp_path / "tuned.onnx", data=data_for(params))
    assert result.files == [str(tmp_path / "tuned.onnx")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "tuned.onnx"]


def test_output_never_replaces_the_input_data_file(tmp_path):
    """An input whose data file is called 'victim.onnx.data': --out victim.onnx would replace it."""
    model, params = head_model()
    save(model, tmp_path / "model.onnx", location="victim.onnx.data")
    before = digests(tmp_path)
    with pytest.raises(
        ntonnx.UsageError, match=r"--out '.*victim.onnx' would overwrite input file '.*victim.onnx.data'"
    ):
        ntonnx.tune(tmp_path / "model.onnx", tmp_path / "victim.onnx", data=data_for(params), force=True)
    with pytest.raises(ntonnx.UsageError, match=r"--out '.*model.onnx' is an input file"):
        ntonnx.tune(tmp_path / "model.onnx", tmp_path / "model.onnx", data=data_for(params), force=True)
    assert digests(tmp_path) == before


def test_missing_data_file_is_one_line(tmp_path):
    model, _ = head_model()
    save(model, tmp_path / "model.onnx", location="model.onnx.data")
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(ntonnx.ModelError, match=r"cannot read its external data \['model.onnx.data'\]"):
        ntonnx.inspect_model(tmp_path / "model.onnx")


def test_models_past_the_protobuf_limit_go_through_files(tmp_path, monkeypatch):
    """Above the limit: onnxruntime loads from a path, and even a single-file input is written external."""
    monkeypatch.setattr(model_io, "_PROTOBUF_SAFE_BYTES", 256)
    model, params = head_model(dim=64)
    save(model, tmp_path / "model.onnx")
    serialized = []
    real = model_io.serialize_for_runtime

    def spy(proto, workdir):
        serialized.append(real(proto, workdir))
        return serialized[-1]

    monkeypatch.setattr("ntonnx.graph.runtime.serialize_for_runtime", spy)
    result = ntonnx.tune(tmp_path / "model.onnx", tmp_path / "tuned.onnx", data=data_for(params))
    assert serialized and all(isinstance(s, str) for s in serialized)  # paths, never one big byte string
    assert result.files == [str(tmp_path / "tuned.onnx"), str(tmp_path / "tuned.onnx.data")]
    assert result.verification.max_error <= 1e-5


def test_fp16_model_keeps_fp16(tmp_path):
    model, params = head_model(dtype=np.float16)
    save(model, tmp_path / "model.onnx")
    arrays = tiny_data({k: v.astype(np.float16) for k, v in params.items()}, n=120)
    data = ArrayDataset(inputs={"x": arrays["x"]}, labels=arrays["labels"], groups=None, source="tiny")
    result = ntonnx.tune(tmp_path / "model.onnx", tmp_path / "tuned.onnx", data=data)
    assert result.verification.max_error <= result.verification.tolerance and result.verification.margin <= 1
    written = onnx.load(str(tmp_path / "tuned.onnx"))
    weight = next(t for t in written.graph.initializer if t.name == "fc.weight")
    assert weight.data_type == onnx.TensorProto.FLOAT16


def test_cli_inspect_unsupported_graph_is_one_line(tmp_path):
    from ntonnx_cli.main import main

    h = onnx.helper
    graph = h.make_graph(
        [
            h.make_node("Mul", ["w0", "mask"], ["w"], name="masking"),
            h.make_node("MatMul", ["x", "w"], ["y"], name="fc"),
        ],
        "g",
        [
            h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4]),
            h.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [4, 3]),
        ],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
        [onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w0")],
    )
    save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.onnx")])
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert "MatMul node 'fc'" in line and "computed at run time by Mul node 'masking'" in line
    assert "--head-node NAME or --embedding TENSOR" in line
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.onnx"), "--head-node", "nope"])
    assert result.exit_code == 2 and "--head-node 'nope' names no node" in result.stderr
