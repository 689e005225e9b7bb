"""Extraction on Ray (``--engine ray``): the same rows as one process, in order, even when a worker dies.

Tests that start a Ray cluster are marked ``ray`` (``pytest -m "not ray"`` skips them) and are
skipped when Ray is not installed. :func:`window`, which each worker uses to cut its samples out
of a data set, is tested without Ray for every form.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from data_builders import passthrough_classifier, save
from ntonnx_cli.main import main

import ntonnx
from ntonnx.data import DataOptions, open_dataset
from ntonnx.graph import distributed
from ntonnx.graph.distributed import window

SAMPLE = Path(__file__).resolve().parent.parent / "sample_models" / "colored_digits"


def _inputs(data, batch: int) -> dict[str, np.ndarray]:
    batches = list(data.batches(batch))
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


@pytest.fixture
def npy_heldout(tmp_path) -> Path:
    folder = tmp_path / "heldout"
    folder.mkdir()
    with np.load(SAMPLE / "heldout.npz") as archive:
        for name in archive.files:
            np.save(folder / f"{name}.npy", archive[name])
    return folder


def _table(tmp_path, rows: int = 50) -> tuple[str, Path]:
    model = save(passthrough_classifier([("x", np.float32, ["N", 2])], n_classes=2), tmp_path / "m.onnx")
    lines = "\n".join(f"{i * 0.5},{-i},{'yes' if i % 3 else 'no'}" for i in range(rows))
    (tmp_path / "t.csv").write_text("a,b,answer\n" + lines + "\n")
    return model, tmp_path / "t.csv"


@pytest.mark.parametrize(("start", "stop", "batch"), [(0, 50, 7), (13, 41, 5), (49, 50, 4), (8, 9, 1)])
def test_window_of_a_table_is_its_rows(tmp_path, start, stop, batch):
    model, table = _table(tmp_path)
    session = ntonnx.Session(model, data_options=DataOptions(label_column="answer"))
    data = session.open_data(table)
    part = window(data, start, stop)
    np.testing.assert_array_equal(part.labels, data.labels[start:stop])
    np.testing.assert_array_equal(_inputs(part, batch)["x"], _inputs(data, 64)["x"][start:stop])


def test_window_of_arrays_and_images(tmp_path, npy_heldout):
    from PIL import Image

    session = ntonnx.Session(SAMPLE / "model.onnx")
    arrays = session.open_data(npy_heldout)
    np.testing.assert_array_equal(_inputs(window(arrays, 100, 230), 64)["image"], arrays.inputs["image"][100:230])
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((16, 16, 3), i * 40 + (cls == "b"), np.uint8)).save(
                tmp_path / "img" / cls / f"{i}.png"
            )
    images = open_dataset(tmp_path / "img", session.input_specs, 2)
    part = window(images, 3, 8)
    np.testing.assert_array_equal(part.labels, images.labels[3:8])
    np.testing.assert_array_equal(_inputs(part, 2)["image"], _inputs(images, 10)["image"][3:8])


def test_engine_ray_without_ray_names_the_extra(tmp_path, npy_heldout, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    args = [
        "extract",
        str(SAMPLE / "model.onnx"),
        "--data",
        str(npy_heldout),
        "-o",
        str(tmp_path / "a"),
        "--engine",
        "ray",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 6
    assert "pip install 'ntonnx[ray]'" in result.output


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_rows_equal_one_process_bit_for_bit(ray_cluster, tmp_path, npy_heldout, monkeypatch):
    monkeypatch.setattr(distributed, "ROWS_PER_TASK", 100)  # 11 tasks over the 2 actors
    local = ntonnx.extract(SAMPLE / "model.onnx", npy_heldout)
    run = ntonnx.RunOptions(engine="ray", ray_workers=2, provider="cpu")
    on_ray = ntonnx.extract(SAMPLE / "model.onnx", npy_heldout, run=run, save_to=tmp_path / "acts")
    assert on_ray.embeddings.tobytes() == local.embeddings.tobytes()
    assert on_ray.logits.tobytes() == local.logits.tobytes()
    np.testing.assert_array_equal(on_ray.labels, local.labels)
    np.testing.assert_array_equal(on_ray.groups, local.groups)
    assert ntonnx.Activations.load(tmp_path / "acts").embeddings.tobytes() == local.embeddings.tobytes()
    # a data set opened here (not a path) is shipped to the actors
    opened = ntonnx.Session(SAMPLE / "model.onnx").open_data(SAMPLE / "heldout.npz")
    shipped = ntonnx.extract(SAMPLE / "model.onnx", opened, run=run)
    assert shipped.embeddings.tobytes() == local.embeddings.tobytes()
    # tune on Ray (rows in the split's order) equals tune here
    here = ntonnx.tune(SAMPLE / "model.onnx", tmp_path / "a.onnx", data=SAMPLE / "heldout.npz")
    there = ntonnx.tune(SAMPLE / "model.onnx", tmp_path / "b.onnx", data=SAMPLE / "heldout.npz", run=run)
    assert here.after == there.after
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


@pytest.mark.ray
def test_a_worker_killed_mid_run_loses_and_repeats_no_row(ray_cluster, tmp_path, npy_heldout, monkeypatch):
    monkeypatch.setattr(distributed, "ROWS_PER_TASK", 60)
    killed: list[int] = []

    def kill_one_worker(done: int) -> None:
        if killed:
            return
        for pid in _extractor_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return

    lock = threading.Lock()

    def progress(description: str, total: int):
        def update(n: int) -> None:
            with lock:
                kill_one_worker(n)

        return update

    run = ntonnx.RunOptions(engine="ray", ray_workers=2, provider="cpu")
    acts = ntonnx.extract(SAMPLE / "model.onnx", npy_heldout, run=run, save_to=tmp_path / "acts", progress=progress)
    assert killed, "no Ray worker was found to kill"
    local = ntonnx.extract(SAMPLE / "model.onnx", npy_heldout)
    assert acts.embeddings.tobytes() == local.embeddings.tobytes()


def _extractor_pids() -> list[int]:
    """Processes of this test's Ray actors running the extractor (their title names the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "MapBatches(_Extractor)" in title and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids
