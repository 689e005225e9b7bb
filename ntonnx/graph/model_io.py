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
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from ntonnx.errors import ModelError, UsageError, first_line

# Protobuf refuses to serialise a message over 2 GiB; stay clear of it with a margin.
_PROTOBUF_SAFE_BYTES = 1_800_000_000
_TMP_PREFIX = ".ntonnx-tmp-"
# onnx's default: tensors of at least this many bytes go to the external-data file.
_EXTERNAL_THRESHOLD_BYTES = 1024

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
    locations = {
        entry.value
        for tensor in _all_tensors(proto)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    if locations:
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise ModelError(
                f"model '{path}': cannot read its external data {sorted(locations)} ({first_line(exc)})"
            ) from None
    external = frozenset(str((path.parent / loc).resolve()) for loc in locations)
    return LoadedModel(proto=proto, path=path, external_files=external)


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


def _all_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of every graph, subgraphs (If/Loop bodies) included."""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attr.graphs)


def serialize_for_runtime(model: onnx.ModelProto, workdir: str) -> bytes | str:
    """Bytes onnxruntime can load, or a path in ``workdir`` when the model is too big for bytes."""
    if model.ByteSize() < _PROTOBUF_SAFE_BYTES:
        return model.SerializeToString()
    target = os.path.join(workdir, "model.onnx")
    onnx.save_model(model, target, save_as_external_data=True, location="model.onnx.data")
    return target


@dataclass
class StagedModel:
    """A model saved in a temporary folder beside its destination, not yet renamed into place.

    Attributes
    ----------
    path : the temporary model file (check it here).
    files : the destination files, in the order they are renamed into place (data file first).
    """

    path: Path
    files: list[Path]


@contextlib.contextmanager
def staged_model(
    model: onnx.ModelProto, out: str | os.PathLike, *, external_data: bool, protected: frozenset[str] = frozenset()
) -> Iterator[StagedModel]:
    """Save ``model`` beside ``out``; when the ``with`` block ends without an error, rename it into place.

    The caller checks the staged file inside the block (a raise aborts and removes everything), so
    a crash or a failed check never leaves a partial or unverified file at ``out``. Each file is
    renamed into place, the external-data file before the model, so that a reader never sees a
    model without its data. ``protected`` lists absolute paths (the input's files) that must never
    be replaced. With external data, ``model``'s tensors are moved out to the data file (the proto
    is emptied of their bytes), so that a model near protobuf's 2 GiB limit is never held twice.
    """
    out = Path(out)
    data_name = out.name + ".data"
    save_external = external_data or model.ByteSize() >= _PROTOBUF_SAFE_BYTES
    targets = [out] + ([out.parent / data_name] if save_external else [])
    for target in targets:
        if str(target.resolve()) in protected:
            raise UsageError(f"--out '{out}' would overwrite input file '{target}'")
    try:
        with _temp_dir_beside(out) as tmp:
            staged = StagedModel(path=Path(tmp) / out.name, files=[])
            if save_external:
                onnx.save_model(
                    model,
                    str(staged.path),
                    save_as_external_data=True,
                    location=data_name,
                    size_threshold=_external_threshold(model),
                    all_tensors_to_one_file=True,
                )
            else:
                onnx.save_model(model, str(staged.path))
            yield staged
            targets = [t for t in targets if (Path(tmp) / t.name).exists()]  # no data file if no tensor had bytes
            if len(targets) > 1 and out.exists():
                # an old model must never be seen next to the new data file: drop it first
                out.unlink()
            for target in reversed(targets):
                os.replace(Path(tmp) / target.name, target)
            staged.files = targets
    except OSError as exc:  # read-only or full file system, permissions, a vanished directory
        raise UsageError(f"--out '{out}': cannot write there ({exc.strerror or exc})") from None


def _external_threshold(model: onnx.ModelProto) -> int:
    """onnx's usual 1 KiB threshold, lowered so that at least one tensor goes to the data file."""
    largest = max((len(t.raw_data) for t in model.graph.initializer), default=0)
    return min(_EXTERNAL_THRESHOLD_BYTES, largest)


@contextlib.contextmanager
def _temp_dir_beside(output: Path) -> Iterator[str]:
    """A temporary folder next to ``output`` (same filesystem, so the final rename is atomic).

    Its name carries our PID; folders left by a process that was killed (SIGKILL, power loss) are
    removed here, on the next write into the same directory.
    """
    parent = output.parent if str(output.parent) else Path(".")
    _remove_stale_temp_dirs(parent)
    tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=parent)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temp_dirs(parent: Path) -> None:
    for candidate in parent.glob(f"{_TMP_PREFIX}*"):
        pid_text = candidate.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if candidate.is_dir() and pid_text.isdigit() and not _process_alive(int(pid_text)):
            logger.info("removing %s left by an interrupted run (pid %s)", candidate, pid_text)
            shutil.rmtree(candidate, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
