"""The exceptions ntonnx raises on purpose, and the exit code each maps to.

Every failure a user can cause (a bad file, a wrong option, data that does not fit the model) is
an :class:`NtonnxError` subclass whose message is one line naming the file, tensor, option or row
and what was expected. Anything else escaping the library is a bug, and the CLI reports it as an
internal error.
"""

from __future__ import annotations


class NtonnxError(Exception):
    """Base class of every error ntonnx raises on purpose; ``exit_code`` is the CLI's status.

    Messages are one printable line by construction: names taken from a file (a node, a column)
    or a path may hold line breaks, NUL bytes, terminal escapes or undecodable bytes (a latin-1
    file name), which are shown escaped so that a pipeline's log keeps one readable line per error.
    """

    exit_code = 1

    def __init__(self, message: str = ""):
        super().__init__(printable(str(message)))


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x00``, ``\\x1b``) and undecodable bytes as ``\\xe9``."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no byte decoded to
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class UsageError(NtonnxError, ValueError):
    """An option or argument is invalid or inconsistent with the others."""

    exit_code = 2


class ModelError(NtonnxError):
    """The model file cannot be read, or is not a classifier ntonnx can handle."""

    exit_code = 3


class DataError(NtonnxError):
    """The data file cannot be read, or does not fit the model."""

    exit_code = 4


class VerificationError(NtonnxError):
    """The rewritten model failed its check; nothing was written at the output path."""

    exit_code = 5


class MissingDependencyError(NtonnxError, ImportError):
    """An optional dependency (typically onnxruntime) is not installed."""

    exit_code = 6


def require_onnxruntime():
    """Import onnxruntime lazily, with an install hint naming both extras when it is absent."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "onnxruntime is not installed; install ntonnx with the CPU runtime "
            "(pip install 'ntonnx[cpu]') or the CUDA runtime (pip install 'ntonnx[gpu]')"
        ) from None
    return onnxruntime


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for embedding a library's error in ours."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
