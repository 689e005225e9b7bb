"""Issue 9, cases 1–10: what ntonnx writes, where, with which mode, and which external data it reads.

Every refusal goes through the real CLI: one stderr line, the documented exit code, no traceback,
inputs byte-identical, nothing created outside ``-o``/``--report``. The concurrency test runs
eight writer processes through the library's write path (:func:`staged_model`, what ``tune``
calls) for 100 rounds each, plus one round of eight real ``ntonnx tune --force`` processes.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data
from click.testing import CliRunner
from ntonnx_cli.main import main
from onnx import numpy_helper

from ntonnx import errors as ntonnx_errors
from ntonnx.graph.model_io import load_model, staged_model

USAGE, MODEL = 2, 3


def run(*args, cwd: Path | None = None) -> tuple[int, str]:
    """Exit code and the error line; a failure must print exactly one line on stderr, no traceback."""
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)
    if result.exit_code == 0:
        return 0, ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntonnx: error:"), result.stderr
    return result.exit_code, lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (special files by kind), to prove nothing changed or appeared."""
    files = {}
    for path in sorted(folder.rglob("*")):
        mode = os.lstat(path).st_mode
        key = str(path.relative_to(folder))
        files[key] = path.read_bytes() if stat.S_ISREG(mode) else stat.S_IFMT(mode).to_bytes(4, "little")
    return files


@pytest.fixture
def work(tmp_path) -> Path:
    model, params = tiny_classifier()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    return tmp_path


# -- case 1: --report follows the output rule ---------------------------------------------------


@pytest.mark.parametrize("target", ["m.onnx", "d.npz", "o.onnx", "existing.json"])
def test_report_never_replaces_an_input_the_output_or_an_existing_file(work, target):
    (work / "existing.json").write_text("{}")
    before = snapshot(work)
    args = ["tune", work / "m.onnx", "--data", work / "d.npz", "-o", work / "o.onnx", "--report", work / target]
    code, line = run(*args)
    assert code == USAGE and "--report" in line, line
    assert snapshot(work) == before


def test_report_replaces_an_existing_report_only_with_force(work):
    (work / "r.json").write_text("{}")
    code, _ = run("tune", work / "m.onnx", "--data", work / "d.npz", "-o", work / "o.onnx", "--report", work / "r.json",
                  "--force")  # fmt: skip
    assert code == 0 and (work / "r.json").read_text().startswith("{\n")


@pytest.mark.parametrize("option", ["--data", "--tune-data", "--eval-data"])
def test_out_never_replaces_any_data_file_even_with_force(work, option):
    # case 2: tune -o h.npz --force where h.npz is the data
    np.savez(work / "h.npz", **dict(np.load(work / "d.npz")))
    before = snapshot(work)
    extra = [] if option == "--data" else ["--data", work / "d.npz"]
    code, line = run("tune", work / "m.onnx", *extra, option, work / "h.npz", "-o", work / "h.npz", "--force")
    assert code == USAGE and "is an input file" in line
    assert snapshot(work) == before


def test_out_never_replaces_the_tokenizer_or_lands_in_a_data_folder(work):
    folder = work / "arrays"
    folder.mkdir()
    for key, value in np.load(work / "d.npz").items():
        np.save(folder / f"{key}.npy", value)
    before = snapshot(work)
    code, line = run("extract", work / "m.onnx", "--data", folder, "-o", folder / "acts.npz")
    assert code == USAGE and "inside input folder" in line
    code, line = run("tune", work / "m.onnx", "--data", work / "d.npz", "-o", work / "t.json", "--tokenizer",
                     work / "t.json")  # fmt: skip
    assert code in (USAGE, 4)  # refused either as an output over an input or as the tokenizer itself
    assert snapshot(work) == before


def test_extract_replaces_an_existing_file_only_with_force(work):
    (work / "a.npz").write_bytes(b"old")
    code, line = run("extract", work / "m.onnx", "--data", work / "d.npz", "-o", work / "a.npz")
    assert code == USAGE and "--force" in line and (work / "a.npz").read_bytes() == b"old"
    assert run("extract", work / "m.onnx", "--data", work / "d.npz", "-o", work / "a.npz", "--force")[0] == 0


# -- case 3: special files ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["-o", "--report"])
def test_a_fifo_or_device_at_an_output_is_refused(work, which):
    os.mkfifo(work / "pipe")
    for target in (work / "pipe", Path("/dev/null")):
        before = snapshot(work)
        out, report = (target, work / "r.json") if which == "-o" else (work / "o.onnx", target)
        code, line = run("tune", work / "m.onnx", "--data", work / "d.npz", "-o", out, "--report", report, "--force")
        assert code == USAGE and "not a regular file" in line, line
        assert snapshot(work) == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# -- case 4: external data beside the output, not the current directory -------------------------


@pytest.fixture
def external(tmp_path) -> Path:
    """A model with external data in ``tmp_path/in``, its data, and empty ``out`` and ``cwd`` folders."""
    model, params = tiny_classifier()
    for name in ("in", "out", "cwd"):
        (tmp_path / name).mkdir()
    onnx.save(model, tmp_path / "in" / "e.onnx", save_as_external_data=True, location="e.onnx.data",
              size_threshold=0)  # fmt: skip
    np.savez(tmp_path / "in" / "d.npz", **tiny_data(params))
    return tmp_path


def test_an_existing_data_file_beside_the_output_is_kept_without_force(external):
    (external / "out" / "x.onnx.data").write_bytes(b"user's file")
    before = snapshot(external)
    code, line = run("tune", external / "in" / "e.onnx", "--data", external / "in" / "d.npz", "-o",
                     external / "out" / "x.onnx", cwd=external / "cwd")  # fmt: skip
    assert code == USAGE and "x.onnx.data" in line and "--force" in line
    assert snapshot(external) == before


def test_a_data_file_in_the_current_directory_does_not_block_another_folder(external):
    (external / "cwd" / "y.onnx.data").write_bytes(b"unrelated")
    code, _ = run("tune", external / "in" / "e.onnx", "--data", external / "in" / "d.npz", "-o",
                  external / "out" / "y.onnx", cwd=external / "cwd")  # fmt: skip
    assert code == 0
    assert (external / "cwd" / "y.onnx.data").read_bytes() == b"unrelated"
    assert load_model(external / "out" / "y.onnx").external_files == {str(external / "out" / "y.onnx.data")}


def test_force_over_a_previous_external_data_output_works_from_anywhere(external):
    args = ["tune", external / "in" / "e.onnx", "--data", external / "in" / "d.npz", "-o", "y.onnx"]
    assert run(*args, cwd=external / "out")[0] == 0
    assert run(*args, "--force", cwd=external / "out")[0] == 0
    args[-1] = external / "out" / "y.onnx"
    assert run(*args, "--force", "--seed", "3", cwd=external / "cwd")[0] == 0
    onnx.checker.check_model(str(external / "out" / "y.onnx"))
    assert sorted(p.name for p in (external / "out").iterdir()) == ["y.onnx", "y.onnx.data"]
    assert not list((external / "cwd").iterdir())


# -- case 5: concurrent --force writers ---------------------------------------------------------


def _writer(args: tuple[str, bool, int, int]) -> str:
    """One writer process: ``rounds`` writes of a model whose head is marked with its id and round."""
    out, external, writer, rounds = args
    model, _ = tiny_classifier()
    for round_ in range(rounds):
        version = model.__class__()
        version.CopyFrom(model)
        weight = next(t for t in version.graph.initializer if t.name == "fc.weight")
        weight.CopyFrom(numpy_helper.from_array(np.full((3, 8), writer * 1000 + round_, np.float32), "fc.weight"))
        onnx.helper.set_model_props(version, {"writer": str(writer), "round": str(round_)})
        with staged_model(version, out, external_data=external) as staged:
            load_model(staged.path)  # the check tune makes on the staged file
    return "ok"


@pytest.mark.parametrize("external", [False, True], ids=["single-file", "external-data"])
def test_concurrent_force_writers_each_leave_a_complete_matching_pair(tmp_path, external):
    out = tmp_path / "out.onnx"
    with multiprocessing.get_context("fork").Pool(8) as pool:
        results = pool.map(_writer, [(str(out), external, writer, 100) for writer in range(8)])
    assert results == ["ok"] * 8
    written = load_model(out).proto
    props = {p.key: p.value for p in written.metadata_props}
    weight = numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == "fc.weight"))
    assert np.all(weight == int(props["writer"]) * 1000 + int(props["round"])), "model and data of different writes"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.onnx", "out.onnx.data"] if external else ["out.onnx"])


def test_eight_concurrent_cli_force_runs_all_succeed(tmp_path):
    """The real CLI, once (eight processes cost ~6 s of CPU each to start); the external-data layout, the harder."""
    model, params = tiny_classifier()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    np.savez(tmp_path / "d.npz", **tiny_data(params, n=60))
    out = tmp_path / "o" / "out.onnx"
    out.parent.mkdir()
    command = [sys.executable, "-m", "ntonnx_cli.main", "tune", str(tmp_path / "m.onnx"), "--data",
               str(tmp_path / "d.npz"), "-o", str(out), "--force", "--method", "llr"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env) for _ in range(8)]
    errors = [proc.communicate(timeout=300)[1].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, errors
    onnx.checker.check_model(str(out))
    load_model(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.onnx", "out.onnx.data"]


# -- case 8: modes follow the umask ---------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_written_follows_the_umask(external, umask):
    previous = os.umask(umask)
    try:
        src = external / "in"
        code, _ = run("tune", src / "e.onnx", "--data", src / "d.npz", "-o", external / "out" / "t.onnx", "--report",
                      external / "out" / "r.json")  # fmt: skip
        assert code == 0
        assert run("extract", src / "e.onnx", "--data", src / "d.npz", "-o", external / "out" / "a.npz")[0] == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (external / "out").iterdir()}
    assert set(modes) == {"t.onnx", "t.onnx.data", "r.json", "a.npz"}
    assert set(modes.values()) == {0o666 & ~umask}, modes


# -- cases 9, 10: external data locations -------------------------------------------------------


def _with_location(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    return model


@pytest.mark.parametrize("kind", ["symlink to a file outside", "symlinked folder", "dot-dot", "absolute", "fifo",
                                  "directory", "missing"])  # fmt: skip
def test_external_data_must_be_a_regular_file_inside_the_models_folder(tmp_path, kind):
    model, params = tiny_classifier()
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    secret = tmp_path / "secret.bin"
    os.replace(folder / "m.onnx.data", secret)  # the bytes a malicious model wants copied into its output
    location = {
        "symlink to a file outside": "link.data",
        "symlinked folder": "sub/secret.bin",
        "dot-dot": "../secret.bin",
        "absolute": str(secret),
        "fifo": "pipe.data",
        "directory": "sub",
        "missing": "nothing.data",
    }[kind]
    if kind == "symlink to a file outside":
        os.symlink(secret, folder / "link.data")
    elif kind in ("symlinked folder", "directory"):
        os.symlink(tmp_path, folder / "sub") if kind == "symlinked folder" else (folder / "sub").mkdir()
    elif kind == "fifo":
        os.mkfifo(folder / "pipe.data")
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    onnx.save(_with_location(proto, location), folder / "m.onnx")
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    before = snapshot(tmp_path)
    code, line = run("tune", folder / "m.onnx", "--data", tmp_path / "d.npz", "-o", tmp_path / "o.onnx")
    assert code == MODEL and "external data" in line, line
    assert snapshot(tmp_path) == before


def test_sparse_initializer_external_data_is_read_beside_the_model_not_the_cwd(tmp_path):
    model, params = tiny_classifier()
    values = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "sp")
    indices = numpy_helper.from_array(np.array([0, 5], np.int64), "sp_idx")
    values.ClearField("raw_data")
    values.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "sparse.bin"), ("offset", "0"), ("length", "8")):
        entry = values.external_data.add()
        entry.key, entry.value = key, value
    model.graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(values, indices, [8]))
    (tmp_path / "model").mkdir()
    (tmp_path / "cwd").mkdir()
    onnx.save(model, tmp_path / "model" / "m.onnx")
    np.array([1.0, 2.0], np.float32).tofile(tmp_path / "cwd" / "sparse.bin")  # only in the current directory
    np.savez(tmp_path / "d.npz", **tiny_data(params))
    code, line = run("inspect", tmp_path / "model" / "m.onnx", cwd=tmp_path / "cwd")
    assert code == MODEL and "sparse.bin" in line and "no such file" in line
    os.symlink(tmp_path / "cwd" / "sparse.bin", tmp_path / "model" / "sparse.bin")
    code, line = run("inspect", tmp_path / "model" / "m.onnx", cwd=tmp_path / "cwd")
    assert code == MODEL and "symlink" in line
    os.unlink(tmp_path / "model" / "sparse.bin")
    os.replace(tmp_path / "cwd" / "sparse.bin", tmp_path / "model" / "sparse.bin")
    loaded = load_model(tmp_path / "model" / "m.onnx")
    assert numpy_helper.to_array(loaded.proto.graph.sparse_initializer[0].values).tolist() == [1.0, 2.0]


def test_a_failed_swap_puts_the_old_pair_back(tmp_path, monkeypatch):
    """If the new pair cannot be moved in, the old pair is restored: a failed run never leaves no model."""
    import ntonnx.graph.model_io as model_io

    out = tmp_path / "out.onnx"
    old, _ = tiny_classifier(seed=1)
    with staged_model(old, out, external_data=True):
        pass
    before = snapshot(tmp_path)
    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(src).parent.name.startswith(".ntonnx-tmp-") and Path(dst) == out:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(model_io.os, "rename", failing_rename)
    new, _ = tiny_classifier(seed=2)
    with pytest.raises(ntonnx_errors.UsageError, match="No space left"), staged_model(new, out, external_data=True):
        pass
    assert snapshot(tmp_path) == before
    load_model(out)
