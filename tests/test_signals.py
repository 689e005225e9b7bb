"""Interrupts and kills: the output is absent or complete, never partial; leftovers are cleaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data

# Runs the real CLI, with a hook that pauses at a chosen point so the test can signal it there.
_RUNNER = textwrap.dedent(
    """
    import sys, time
    point, marker = sys.argv[1], sys.argv[2]
    def pause():
        open(marker, "w").close()
        # Short sleeps, as a real run returns to Python between batches: the kernel may hand the
        # signal to another thread (onnxruntime's, the background import), and then a single long
        # sleep in the main thread is not cut short: the handler would run only after it ends.
        for _ in range(1200):
            time.sleep(0.05)
    if point == "extraction":
        import ntonnx.graph.runtime as runtime
        original_run = runtime.ModelRunner.run
        def slow_run(self, *args, **kwargs):
            pause()
            return original_run(self, *args, **kwargs)
        runtime.ModelRunner.run = slow_run
    else:
        import ntonnx.session as session
        original_verify = session.verify_written
        def slow_verify(*args, **kwargs):
            result = original_verify(*args, **kwargs)
            pause()  # the temp file is complete but not yet renamed into place
            return result
        session.verify_written = slow_verify
    from ntonnx_cli.main import main
    sys.argv = ["ntonnx"] + sys.argv[3:]
    main()
    """
)


@pytest.fixture
def model_and_data(tmp_path):
    model, params = tiny_classifier()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    return tmp_path / "m.onnx", tmp_path / "d.npz"


def _start(tmp_path: Path, point: str, model: Path, data: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / f"reached-{point}"
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER)
    proc = subprocess.Popen(
        [sys.executable, str(script), point, str(marker), "tune", str(model), "--data", str(data), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "runner never reached the pause point"
        time.sleep(0.05)
    return proc, marker


@pytest.mark.parametrize("point", ["extraction", "writing"])
def test_sigint_leaves_no_output_and_exits_130(tmp_path, model_and_data, point):
    model, data = model_and_data
    out = tmp_path / "out.onnx"
    before = model.read_bytes()
    proc, _ = _start(tmp_path, point, model, data, out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".ntonnx-tmp-*"))
    assert model.read_bytes() == before


@pytest.mark.parametrize("point", ["extraction", "writing"])
def test_sigkill_leaves_no_partial_output_and_the_next_run_cleans_up(tmp_path, model_and_data, point):
    model, data = model_and_data
    out = tmp_path / "out.onnx"
    proc, _ = _start(tmp_path, point, model, data, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert not out.exists()
    leftovers = list(tmp_path.glob(".ntonnx-tmp-*"))
    assert len(leftovers) == (1 if point == "writing" else 0)

    from click.testing import CliRunner
    from ntonnx_cli.main import main

    result = CliRunner().invoke(main, ["tune", str(model), "--data", str(data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert not list(tmp_path.glob(".ntonnx-tmp-*")), "stale temp folder was not cleaned"
    onnx.checker.check_model(str(out))


@pytest.mark.parametrize("point", ["extraction", "writing"])
def test_sigterm_is_handled_like_sigint_and_exits_143(tmp_path, model_and_data, point):
    model, data = model_and_data
    out = tmp_path / "out.onnx"
    before = model.read_bytes()
    proc, _ = _start(tmp_path, point, model, data, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["ntonnx: terminated; no output was written"]
    assert not out.exists()
    assert not list(tmp_path.glob(".ntonnx-*"))
    assert model.read_bytes() == before


def test_a_live_runs_temp_folder_is_kept_whatever_its_pid_and_a_dead_ones_is_removed(tmp_path, model_and_data):
    """Staleness is the writer's flock, not a PID: a PID from another namespace may look dead (or alive)."""
    import fcntl

    model, data = model_and_data
    live, dead = tmp_path / ".ntonnx-tmp-999999999-live", tmp_path / ".ntonnx-tmp-1-dead"
    for folder in (live, dead):
        folder.mkdir()
        (folder / "big.onnx.data").write_bytes(b"\0" * 1000)
        (folder / ".lock").touch()
    holder = os.open(live / ".lock", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # as the live writer holds it (PID 999999999 does not exist here)
    try:
        from click.testing import CliRunner
        from ntonnx_cli.main import main

        result = CliRunner().invoke(main, ["tune", str(model), "--data", str(data), "-o", str(tmp_path / "o.onnx")])
        assert result.exit_code == 0, result.output
        assert live.is_dir() and (live / "big.onnx.data").exists(), "a live run's temp folder was deleted"
        assert not dead.exists(), "a dead run's temp folder was left (PID 1 is alive, its lock is not held)"
    finally:
        os.close(holder)
