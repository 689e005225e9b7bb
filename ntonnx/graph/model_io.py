"""Reading and writing ONNX files safely.

Loading turns every way a file can be broken into a one-line :class:`ModelError`. Saving is
atomic: the model (and its external-data file, if it has one) is written into a temporary folder
beside the destination, checked by the caller, then renamed into place, so a crash never leaves a
partial file at the output path and the input files are never written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from ntonnx.errors import ModelError, UsageError, first_line

# Protobuf refuses to serialise a message over 2 GiB; stay clear of it with a margin.
_PROTOBUF_SAFE_BYTES = 1_800_000_000
_TMP_PREFIX = ".ntonnx-tmp-"
_NEW_PREFIX = ".ntonnx-new-"  # a temp folder not yet locked (see _temp_dir_beside)
_LOCK_NAME = ".lock"
# A temp folder without a lock file older than this was left by a dead run (or an older ntonnx).
_STALE_UNLOCKED_S = 3600
# onnx's default: tensors of at least this many bytes go to the external-data file.
_EXTERNAL_THRESHOLD_BYTES = 1024
# Tensors in a data file we write start at multiples of this (page-aligned, for memory mapping).
_ALIGNMENT = 4096

logger = logging.getLogger("ntonnx")


@dataclass(frozen=True)
class LoadedModel:
    """An ONNX model in memory plus where it came from.

    ``external_files`` are the absolute paths of the external-data files its weights were read
    from (empty for a single-file model); outputs keep that layout and never write over them.
    """

    proto: onnx.ModelProto
    path: Path
    external_files: frozenset[str]

    @property
    def writes_data_file(self) -> bool:
        """Whether a model written from this one gets a ``.data`` file: it had one, or is too big for one file."""
        return bool(self.external_files) or self.proto.ByteSize() >= _PROTOBUF_SAFE_BYTES

    @property
    def protected_paths(self) -> frozenset[str]:
        """Files an output must never replace: the model itself and its data files."""
        return self.external_files | {str(self.path.resolve())}


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load ``path`` with its external data, or raise a :class:`ModelError` saying why not."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise ModelError(f"model path '{path}' is a directory; expected an .onnx file")
    if path.stat().st_size == 0:
        raise ModelError(f"model file '{path}' is empty")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ...
        raise ModelError(f"model file '{path}' is not a valid ONNX model ({first_line(exc)})") from None
    _check_text_fields(proto, path)
    if not proto.graph.node or not proto.graph.output:
        raise ModelError(f"model file '{path}' holds no graph with nodes and outputs; is it an ONNX model?")
    external = _load_external_data(proto, path)
    return LoadedModel(proto=proto, path=path, external_files=external)


def _load_external_data(proto: onnx.ModelProto, path: Path) -> frozenset[str]:
    """Read every tensor's external data into the proto; return the absolute paths of the files read.

    Each ``location`` is checked first (:func:`_external_file`), for initializers, tensor
    attributes and sparse initializers of every graph alike: onnx's own loader has followed
    symlinks and skipped sparse tensors, which onnxruntime then read relative to the current
    directory.
    """
    files: dict[str, Path] = {}
    for tensor in _all_tensors(proto, sparse=True):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if location not in files:
            files[location] = _external_file(path, location, tensor.name)
        tensor.raw_data = _read_range(path, files[location], entries, tensor.name)
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
    return frozenset(str(file.resolve()) for file in files.values())


def _external_file(model: Path, location: str, tensor: str) -> Path:
    """The file an external-data ``location`` names, if it is one ntonnx may read, else a :class:`ModelError`.

    Allowed: a relative path without ``..``, inside the model's folder, naming a regular file,
    with no symlink on the way (a symlink could make a model exfiltrate any file into its output).
    """
    where = f"model '{model}': tensor '{tensor}' has external data location '{location}'"
    parts = Path(location).parts
    if not location or "\0" in location:
        raise ModelError(f"{where}: empty or invalid")
    if Path(location).is_absolute() or location.startswith(("/", "\\")):
        raise ModelError(f"{where}: an absolute path; external data must lie beside the model")
    if ".." in parts or ".." in location.replace("\\", "/").split("/"):
        raise ModelError(f"{where}: it leaves the model's folder ('..')")
    folder = model.parent.absolute()
    candidate, mode = folder, stat.S_IFDIR  # "." names the folder itself
    for part in parts:
        candidate = candidate / part
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            raise ModelError(f"{where}: cannot read its external data (no such file)") from None
        except OSError as exc:
            raise ModelError(f"{where}: cannot read its external data ({exc.strerror})") from None
        if stat.S_ISLNK(mode):
            raise ModelError(f"{where}: '{candidate}' is a symlink; external data must be a regular file")
    if not stat.S_ISREG(mode):
        raise ModelError(f"{where}: '{candidate}' is not a regular file")
    if not candidate.resolve().is_relative_to(folder.resolve()):
        raise ModelError(f"{where}: it leaves the model's folder")
    return candidate


def _read_range(model: Path, file: Path, entries: dict[str, str], tensor: str) -> bytes:
    """The bytes ``offset``/``length`` of ``entries`` select in ``file``, checked against its size."""
    where = f"model '{model}': tensor '{tensor}'"
    try:
        offset = int(entries.get("offset") or 0)
        length = None if entries.get("length") in (None, "") else int(entries["length"])
    except ValueError:
        raise ModelError(f"{where}: external data offset/length are not integers") from None
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ModelError(f"{where}: cannot read its external data '{file.name}' ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        end = size if length is None else offset + length
        if offset < 0 or (length is not None and length < 0) or end > size:
            raise ModelError(
                f"{where}: cannot read its external data '{file.name}': bytes {offset}..{end} asked, "
                f"the file has {size} (truncated?)"
            )
        handle.seek(offset)
        return handle.read(end - offset)


def _check_text_fields(proto: onnx.ModelProto, path: Path) -> None:
    """Decode every string field once.

    Protobuf decodes strings lazily, so corrupt UTF-8 would otherwise surface as a
    UnicodeDecodeError deep inside whatever first reads that name.
    """
    try:
        _touch_strings(proto)
    except UnicodeError:
        raise ModelError(f"model file '{path}' holds text that is not valid UTF-8; the file is corrupt") from None


def _touch_strings(message) -> None:
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in value if _is_repeated(field) else [value]:
                _touch_strings(item)
        elif field.type == field.TYPE_STRING:
            for text in value if _is_repeated(field) else [value]:
                # proto2 hands back undecodable text as bytes (or str with surrogates)
                text.decode("utf-8") if isinstance(text, bytes) else text.encode("utf-8")


def _is_repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5 deprecates ``label``
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def _all_tensors(proto: onnx.ModelProto, *, sparse: bool = False) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of every graph, subgraphs (If/Loop bodies) included.

    ``sparse`` also yields the values and indices of sparse initializers and sparse attributes.
    """
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        if sparse:
            for tensor in graph.sparse_initializer:
                yield from (tensor.values, tensor.indices)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors
                elif sparse and attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
                elif attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attr.graphs)


def save_with_external_data(model: onnx.ModelProto, path: Path, data_name: str) -> bool:
    """Save ``model`` at ``path`` with its large tensors moved to ``path.parent / data_name``.

    Written here rather than by ``onnx.save_model(save_as_external_data=True)``, which checks for
    an existing data file relative to the current directory instead of ``path``'s. ``model``'s
    tensors are emptied of their bytes as they are written (so a model near protobuf's 2 GiB limit
    is never held twice). Returns whether a data file was written (no tensor may have bytes).
    """
    threshold = _external_threshold(model)
    data_path = path.parent / data_name
    moved = False
    with open(data_path, "wb") as data:
        for tensor in _all_tensors(model):
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < max(threshold, 1):
                continue
            data.write(b"\0" * (-data.tell() % _ALIGNMENT))
            offset = data.tell()
            data.write(tensor.raw_data)
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", offset), ("length", len(tensor.raw_data))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
            moved = True
    if not moved:
        data_path.unlink()
    onnx.save_model(model, str(path))
    return moved


def serialize_for_runtime(model: onnx.ModelProto, workdir: str) -> bytes | str:
    """Bytes onnxruntime can load, or a path in ``workdir`` when the model is too big for bytes."""
    if model.ByteSize() < _PROTOBUF_SAFE_BYTES:
        return model.SerializeToString()
    target = Path(workdir) / "model.onnx"
    save_with_external_data(model, target, "model.onnx.data")
    return str(target)


@dataclass
class StagedModel:
    """A model saved in a temporary folder beside its destination, not yet renamed into place.

    Attributes
    ----------
    path : the temporary model file (check it here).
    files : the destination files once in place: the model, then its data file if it has one.
    """

    path: Path
    files: list[Path]


@contextlib.contextmanager
def staged_model(
    model: onnx.ModelProto, out: str | os.PathLike, *, external_data: bool, protected: frozenset[str] = frozenset()
) -> Iterator[StagedModel]:
    """Save ``model`` beside ``out``; when the ``with`` block ends without an error, move it into place.

    The caller checks the staged file inside the block (a raise aborts and removes everything), so
    a crash or a failed check never leaves a partial or unverified file at ``out``. With external
    data, ``model``'s tensors are moved out to ``<out>.data`` (the proto is emptied of their bytes),
    so that a model near protobuf's 2 GiB limit is never held twice, and the new pair replaces the
    old one only once both files are complete (:func:`_move_into_place`). ``protected`` lists
    absolute paths (the input's files) that must never be replaced.
    """
    out = Path(out)
    data_name = out.name + ".data"
    save_external = external_data or model.ByteSize() >= _PROTOBUF_SAFE_BYTES
    for target in [out] + ([out.parent / data_name] if save_external else []):
        if str(target.resolve()) in protected:
            raise UsageError(f"--out '{out}' would overwrite input file '{target}'")
    try:
        with _temp_dir_beside(out) as tmp:
            staged = StagedModel(path=tmp / out.name, files=[])
            has_data = save_external and save_with_external_data(model, staged.path, data_name)
            if not save_external:
                onnx.save_model(model, str(staged.path))
            yield staged
            names = [data_name, out.name] if has_data else [out.name]
            _move_into_place(tmp, out.parent, names)
            staged.files = [out.parent / name for name in reversed(names)]
    except OSError as exc:  # read-only or full file system, permissions, a vanished directory
        raise UsageError(f"--out '{out}': cannot write there ({exc.strerror or exc})") from None


def _move_into_place(staged: Path, destination: Path, names: list[str]) -> None:
    """Rename ``staged / name`` to ``destination / name`` for each name, as one step for readers and writers.

    One file is a single atomic rename. A model and its data file cannot be swapped atomically,
    so the old pair is first moved aside (a reader meanwhile finds no model, never a model next to
    the wrong data), then the new pair is moved in, the model last; if that fails, the old pair is
    put back. Concurrent writers to the same folder take turns (a lock on the folder), so each ends
    with a complete pair in place, and SIGINT/SIGTERM wait until the step is done.
    """
    with _folder_lock(destination), _signals_deferred():
        if len(names) == 1:
            os.replace(staged / names[0], destination / names[0])
            return
        aside = staged / "replaced"
        aside.mkdir()
        moved = []
        try:
            for name in reversed(names):  # the model first: it must never outlive its data
                if os.path.lexists(destination / name):
                    os.rename(destination / name, aside / name)
                    moved.append(name)
            for name in names:  # the data first: the model must never precede its data
                os.rename(staged / name, destination / name)
        except OSError:
            for name in names:
                if os.path.lexists(destination / name) and not os.path.lexists(staged / name):
                    with contextlib.suppress(OSError):
                        os.unlink(destination / name)
            for name in moved:
                with contextlib.suppress(OSError):
                    os.rename(aside / name, destination / name)
            raise


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` itself, held for the block (no lock file is left behind)."""
    if fcntl is None:  # not POSIX: renames are still atomic one by one
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block (main thread only), so a swap is never cut in half."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _external_threshold(model: onnx.ModelProto) -> int:
    """onnx's usual 1 KiB threshold, lowered so that at least one tensor goes to the data file."""
    largest = max((len(t.raw_data) for t in _all_tensors(model)), default=0)
    return min(_EXTERNAL_THRESHOLD_BYTES, largest)


@contextlib.contextmanager
def _temp_dir_beside(output: Path) -> Iterator[Path]:
    """A temporary folder next to ``output`` (same filesystem, so the final rename is atomic).

    The writer holds an exclusive ``flock`` on a lock file inside it for as long as it lives; the
    kernel releases the lock when the process dies, however it dies (SIGKILL, OOM killer), so a
    folder whose lock can be taken was left by a dead run and is removed here, on the next write
    into the same directory. A process ID would not do: PIDs are reused, and differ across PID
    namespaces (containers sharing a volume). The folder is created under another prefix and
    renamed once locked, so that no other run ever sees it unlocked.
    """
    parent = output.parent if str(output.parent) else Path(".")
    _remove_stale_temp_dirs(parent)
    fresh = Path(tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=parent))
    lock = os.open(fresh / _LOCK_NAME, os.O_CREAT | os.O_WRONLY, 0o600)
    tmp = fresh.with_name(_TMP_PREFIX + fresh.name[len(_NEW_PREFIX) :])
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        os.rename(fresh, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp if tmp.exists() else fresh, ignore_errors=True)
        os.close(lock)


def _remove_stale_temp_dirs(parent: Path) -> None:
    """Remove temp folders of dead runs: those whose lock is free, and lock-less ones over an hour old."""
    now = time.time()
    for candidate in parent.glob(f"{_NEW_PREFIX}*"):  # not locked yet, or never will be: judge by age
        _remove_if_older(candidate, now)
    for candidate in parent.glob(f"{_TMP_PREFIX}*"):
        try:
            if not stat.S_ISDIR(os.lstat(candidate).st_mode):
                continue
            fd = os.open(candidate / _LOCK_NAME, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:  # written by an older ntonnx, or being removed: judge by age
            _remove_if_older(candidate, now)
            continue
        except OSError:
            continue
        try:
            if fcntl is None:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run holds it
            logger.info("removing %s left by an interrupted run", candidate)
            shutil.rmtree(candidate, ignore_errors=True)
        finally:
            os.close(fd)


def _remove_if_older(folder: Path, now: float) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(folder).st_mode) and now - os.lstat(folder).st_mtime > _STALE_UNLOCKED_S:
            shutil.rmtree(folder, ignore_errors=True)
