"""Atomic writes of small result files (activations, reports).

The file is written under a temporary name in the destination directory and renamed into place,
so a reader never sees half of it; file-system errors become a one-line :class:`UsageError`
naming the option that chose the path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ntonnx.errors import UsageError


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
