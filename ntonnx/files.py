"""Files ntonnx reads and writes whole: output-path checks, atomic writes, digests, ``.npz`` archives.

One rule for every path ntonnx writes (``tune -o``, ``extract -o``, ``--report``): it is checked by
:func:`check_output_path` before any work is done, and the file is written under a temporary
name in the destination directory and renamed into place (:func:`write_atomic`), so a reader never
sees half of it. File-system errors become a one-line :class:`UsageError` naming the option.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from ntonnx.errors import DataError, UsageError

_CHUNK = 1 << 20


def check_output_path(
    path: str | os.PathLike, *, option: str, inputs: Iterable[str | os.PathLike] = (), force: bool = False
) -> Path:
    """Validate a path ntonnx is about to write, before any work is done; return it as a Path.

    Parameters
    ----------
    path : where the output goes.
    option : the CLI option that chose it (``"--out"``, ``"--report"``), for messages.
    inputs : files this run reads; the output may never be one of them.
    force : whether an existing file may be replaced.
    """
    path = Path(path)
    if path.exists() and any(_same_file(path, Path(p)) for p in inputs):
        raise UsageError(f"{option} '{path}' is an input file; choose another path")
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a directory; expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} '{path}': directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} '{path}': directory '{parent}' is not writable")
    if path.exists() and not force:
        raise UsageError(f"{option} '{path}' already exists; pass --force to replace it")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], option: str, suffix: str = "") -> None:
    """Call ``write(temp_path)`` then rename the result to ``path``.

    ``option`` names the CLI option (e.g. ``"--report"``) for messages; ``suffix`` is the ending
    ``write`` needs on its file name (``np.savez`` appends ``.npz`` otherwise).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"{option} '{path}': directory '{directory}' does not exist")
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a directory; expected a file path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=directory)
        os.close(fd)
        try:
            write(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"{option} '{path}': cannot write there ({exc.strerror or exc})") from None


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def source_digest(path: str | os.PathLike) -> str:
    """sha256 of a data file; for a folder, of its sorted listing (relative path and size of each file).

    A folder of images is not read twice just for provenance: the listing identifies it well
    enough to tell data sets apart.
    """
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    sha = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        sha.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\n".encode())
    return sha.hexdigest()


class BackgroundDigest:
    """The :func:`source_digest` of a data file, computed on a daemon thread (hashlib and reads release the GIL).

    Hashing a 2 GB file takes over a second; started when the file is opened, it runs while the
    data are read and the model runs, and only the report waits for it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._value: str | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="ntonnx-digest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = source_digest(self.path)
        except OSError as exc:
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise DataError(f"data '{self.path}' could not be read for its sha256 ({self._error})")
        return self._value


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file, or raise a :class:`DataError` saying why not."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist")
    if path.is_dir():
        raise DataError(f"data path '{path}' is a directory; expected an .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"data file '{path}' is not a readable .npz archive ({exc})") from None
    if not isinstance(loaded, Mapping):
        raise DataError(f"data file '{path}' holds a single array; expected an .npz archive of named arrays")
    try:
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"data file '{path}' has an unreadable array ({exc})") from None


def npz_members(path: str | os.PathLike) -> list[str] | None:
    """The array names of an ``.npz`` file without reading any array, or None if it is not one."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError, TypeError):
        return None  # not an archive of named arrays: the data reader says what is wrong with it
