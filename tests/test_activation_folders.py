"""Activations saved as a folder of .npy arrays: written in any order, read back memory-mapped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from ntonnx_cli.main import main

import ntonnx
from ntonnx.activations import ActivationsWriter


def test_folder_round_trip_is_memory_mapped(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    acts = ntonnx.extract(model_path, data_path, save_to=tmp_path / "acts")
    again = ntonnx.Activations.load(tmp_path / "acts")
    assert isinstance(again.embeddings, np.memmap)
    np.testing.assert_array_equal(again.embeddings, acts.embeddings)
    np.testing.assert_array_equal(again.logits, acts.logits)
    np.testing.assert_array_equal(again.labels, acts.labels)
    np.testing.assert_array_equal(again.groups, acts.groups)
    assert again.model_digest == acts.model_digest


def test_tune_from_a_folder_equals_tune_from_an_npz(tiny, tmp_path):
    model_path, data_path, _ = tiny()
    runner = CliRunner()
    for out in ("acts.npz", "acts"):
        result = runner.invoke(main, ["extract", str(model_path), "--data", str(data_path), "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    reports = []
    for acts in ("acts.npz", "acts"):
        args = ["tune", str(model_path), "--activations", str(tmp_path / acts), "-o", str(tmp_path / f"{acts}.onnx")]
        result = runner.invoke(main, [*args, "--json"])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.output))
    assert reports[0]["after"] == reports[1]["after"]
    assert (tmp_path / "acts.npz.onnx").read_bytes() != b""


def test_writer_takes_rows_in_any_order_and_each_once(tmp_path):
    labels = np.arange(10) % 3
    writer = ActivationsWriter(tmp_path / "a", labels, None, dim=4, n_logits=3)
    rng = np.random.default_rng(0)
    emb, logits = rng.normal(size=(10, 4)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32)
    for rows in (np.array([7, 8, 9]), np.array([0, 1, 2, 3]), np.array([4, 5, 6])):
        writer.write(rows, emb[rows], logits[rows])
    with pytest.raises(ntonnx.DataError, match="sample 5 arrived twice"):
        writer.write(np.array([5]), emb[[5]], logits[[5]])
    writer.close("digest", "CPUExecutionProvider")
    acts = ntonnx.Activations.load(tmp_path / "a")
    np.testing.assert_array_equal(acts.embeddings, emb)
    np.testing.assert_array_equal(acts.labels, labels)


def test_writer_refuses_missing_rows_and_leaves_no_readable_folder(tmp_path):
    writer = ActivationsWriter(tmp_path / "a", np.zeros(4, np.int64), None, dim=2, n_logits=2)
    writer.write(np.array([0, 1, 3]), np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ntonnx.DataError, match="1 samples never arrived \\(first: 2\\)"):
        writer.close("digest", "cpu")
    assert not ntonnx.activations.is_activations_folder(tmp_path / "a")


def test_writer_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("mine")
    with pytest.raises(ntonnx.UsageError, match="other files in it"):
        ActivationsWriter(tmp_path / "a", np.zeros(2, np.int64), None, dim=2, n_logits=2)
