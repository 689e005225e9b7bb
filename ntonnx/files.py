"""Files ntonnx reads and writes whole: output-path checks, atomic writes, digests, ``.npz`` archives.

One rule for every path ntonnx writes (``tune -o``, ``extract -o``, ``--report``): it is checked by
:func:`check_output_path` before any work is done, and the file is written under a temporary
name in the destination directory and renamed into place (:func:`write_atomic`), so a reader never
sees half of it. File-system errors become a one-line :class:`UsageError` naming the option.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import stat
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

    The one rule for every output (``tune -o``, its ``.data`` file, ``extract -o``, ``--report``):
    never an input file nor inside an input folder, never anything but a regular file or nothing
    (a FIFO or a device would be replaced by a regular file), an existing file only with ``force``,
    in a directory that exists and is writable.

    Parameters
    ----------
    path : where the output goes.
    option : the CLI option that chose it (``"--out"``, ``"--report"``), for messages.
    inputs : files and folders this run reads; the output may never be one of them or lie inside one.
    force : whether an existing file may be replaced.
    """
    path = Path(path)
    for given in inputs:
        if _same_file(path, Path(given)):
            raise UsageError(f"{option} '{path}' is an input file; choose another path")
        if _inside(path, Path(given)):
            raise UsageError(f"{option} '{path}' lies inside input folder '{given}'; choose another path")
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a directory; expected a file path")
    if _exists(path) and not _is_regular(path):
        raise UsageError(f"{option} '{path}' exists and is not a regular file; choose another path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} '{path}': directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} '{path}': directory '{parent}' is not writable")
    if _exists(path) and not force:
        raise UsageError(f"{option} '{path}' already exists; pass --force to replace it")
    return path


def check_output_paths(
    outputs: Mapping[str, str | os.PathLike | None],
    *,
    inputs: Iterable[str | os.PathLike] = (),
    force: bool = False,
) -> dict[str, Path]:
    """:func:`check_output_path` for each of several outputs of one run, which must also differ.

    ``outputs`` maps an option (``"--out"``, ``"--report"``) to its path (None: not written).
    """
    inputs = list(inputs)
    checked: dict[str, Path] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        path = check_output_path(path, option=option, inputs=inputs, force=force)
        for other, seen in checked.items():
            if _resolved(path) == _resolved(seen):
                raise UsageError(f"{option} '{path}' is also {other}; give each output its own path")
        checked[option] = path
    return checked


def _same_file(a: Path, b: Path) -> bool:
    """True when writing ``a`` would write ``b`` (same path after symlinks, or the same inode)."""
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` would be written inside the folder ``folder`` (at any depth)."""
    try:
        return folder.is_dir() and _resolved(path).is_relative_to(folder.resolve())
    except OSError:
        return False


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _is_regular(path: Path) -> bool:
    """A regular file, or a symlink to one (replacing the link leaves its target alone)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return os.path.islink(path)  # a dangling link: replacing it writes nothing else


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the process umask (e.g. 0o644 under umask 022).

    ``tempfile.mkstemp`` creates files 0o600; an output renamed from one would keep that mode
    while every other file a user writes follows the umask.
    """
    try:
        with open("/proc/self/status") as status:  # Linux: read without changing it
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


_UMASK_LOCK = threading.Lock()


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
            os.chmod(tmp, file_mode())
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


class NpzArchive(Mapping):
    """The arrays of an ``.npz`` file, each read only when asked for, after its header is checked.

    An archive may hold arrays a run never needs (notes, another model's inputs): they are never
    decompressed. An array whose header declares more bytes than the machine's memory is refused
    with a :class:`DataError` naming its size, before any allocation. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"data file '{self.path}' does not exist")
        if self.path.is_dir():
            raise DataError(f"data path '{self.path}' is a directory; expected an .npz file")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
            if _is_npy(self.path):
                raise DataError(
                    f"data file '{self.path}' holds a single array; expected an .npz archive of named arrays"
                ) from None
            raise DataError(f"data file '{self.path}' is not a readable .npz archive ({exc})") from None
        self._members = {n[: -len(".npy")]: n for n in self._zip.namelist() if n.endswith(".npy")}
        self._cache: dict[str, np.ndarray] = {}

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def __iter__(self):
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key) -> bool:
        return key in self._members

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            if key not in self._members:
                raise KeyError(key)
            self._cache[key] = self._read(key)
        return self._cache[key]

    def declared(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype the array's header declares, read without decompressing the array."""
        try:
            with self._zip.open(self._members[key]) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    shape, _, dtype = np.lib.format._read_array_header(member, version)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise DataError(f"data file '{self.path}' has an unreadable array '{key}' ({exc})") from None
        return tuple(shape), dtype

    def _read(self, key: str) -> np.ndarray:
        shape, dtype = self.declared(key)
        size = math.prod(shape) * dtype.itemsize
        memory = physical_memory()
        if memory is not None and size > memory:
            raise DataError(
                f"data file '{self.path}': array '{key}' declares shape {shape} of {dtype} ({_gib(size)}), "
                f"more than this machine's memory ({_gib(memory)})"
            )
        if dtype.hasobject:
            raise DataError(f"data file '{self.path}': array '{key}' holds Python objects; expected numbers or text")
        try:
            with self._zip.open(self._members[key]) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"data file '{self.path}' has an unreadable array '{key}' ({exc})") from None


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _is_npy(path: Path) -> bool:
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        return handle.read(6) == b"\x93NUMPY"
    return False


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file, or raise a :class:`DataError` saying why not."""
    with NpzArchive(path) as archive:
        return {key: archive[key] for key in archive}


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
