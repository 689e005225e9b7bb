"""The hand-off between the graph side and the method side: what one model pass yields.

The graph side (:mod:`ntonnx.graph.runtime`) produces :class:`Activations` by running the model;
the method side (:mod:`ntonnx.method`) re-fits the head from them. This module is NumPy only, so
the numerical code never needs onnx or onnxruntime, and activations saved by ``ntonnx extract``
can be tuned on a machine without the model runtime.

Saved activations are an ``.npz`` (read whole) or, for sets larger than memory, a folder of
``.npy`` arrays (``embeddings.npy``, ``logits.npy``, ``labels.npy``, ``groups.npy``) read back
memory-mapped, so only the rows in use are in memory. :class:`ActivationsWriter` fills such a
folder row by row in any order (distributed extraction writes batches as workers finish them);
its manifest, written last, is what makes the folder readable, so a run that stopped half way
never passes for a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ntonnx.errors import DataError, UsageError
from ntonnx.files import read_npz, write_atomic

_MARKER = "ntonnx_activations"
#: The manifest of an activations folder: model digest, provider, sample count.
FOLDER_MANIFEST = "ntonnx_activations.json"


def n_label_classes(n_logits: int) -> int:
    """Classes a head with ``n_logits`` outputs predicts: a single-logit binary head has two."""
    return max(n_logits, 2)


@dataclass
class Activations:
    """What one pass of the model over a data set yields.

    Attributes
    ----------
    embeddings : ndarray of shape (n_samples, dim), the head's input.
    logits : ndarray of shape (n_samples, n_logits), the head's output before any post-op.
    labels : ndarray of shape (n_samples,), int64.
    groups : ndarray of shape (n_samples,) or None; used only for evaluation and ``dfr``.
    model_digest : sha256 of the model file the activations came from.
    provider : execution provider that ran the model.
    """

    embeddings: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    model_digest: str
    provider: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray | slice) -> Activations:
        """The samples at ``index``: an integer array (a copy) or a slice (views, no copy)."""
        return Activations(
            embeddings=self.embeddings[index],
            logits=self.logits[index],
            labels=self.labels[index],
            groups=None if self.groups is None else self.groups[index],
            model_digest=self.model_digest,
            provider=self.provider,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write what :meth:`load` and ``ntonnx tune --activations`` read back: an ``.npz`` when
        ``path`` ends in ``.npz``, else a folder of ``.npy`` arrays (read back memory-mapped)."""
        if Path(path).suffix.lower() != ".npz":
            writer = ActivationsWriter(
                path, self.labels, self.groups, dim=self.embeddings.shape[1], n_logits=self.logits.shape[1],
                dtype=self.embeddings.dtype, logits_dtype=self.logits.dtype,
            )  # fmt: skip
            for start in range(0, len(self), 1 << 16):
                rows = np.arange(start, min(start + (1 << 16), len(self)))
                writer.write(rows, self.embeddings[rows], self.logits[rows])
            writer.close(self.model_digest, self.provider)
            return
        arrays = {
            "embeddings": self.embeddings,
            "logits": self.logits,
            "labels": self.labels,
            _MARKER: np.array([self.model_digest, self.provider]),
        }
        if self.groups is not None:
            arrays["groups"] = self.groups
        write_atomic(path, lambda tmp: np.savez(tmp, **arrays), option="-o", suffix=".npz")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Activations:
        """Read a file or folder written by :meth:`save` (a folder's arrays memory-mapped, never read whole)."""
        if is_activations_folder(path):
            return _load_folder(Path(path))
        arrays = read_npz(path)
        if not is_activations(arrays):
            raise DataError(f"'{path}' is not an activations file written by 'ntonnx extract'")
        missing = {"embeddings", "logits", "labels"} - set(arrays)
        if missing:
            raise DataError(f"activations file '{path}' lacks arrays {sorted(missing)}")
        digest, provider = (str(v) for v in arrays[_MARKER])
        n = len(arrays["labels"])
        if len(arrays["embeddings"]) != n or len(arrays["logits"]) != n:
            raise DataError(f"activations file '{path}': embeddings, logits and labels differ in length")
        return cls(
            embeddings=arrays["embeddings"],
            logits=arrays["logits"],
            labels=arrays["labels"].astype(np.int64),
            groups=arrays.get("groups"),
            model_digest=digest,
            provider=provider,
        )


def is_activations(arrays) -> bool:
    """True when named arrays (a dict or an open ``NpzFile``) came from :meth:`Activations.save`."""
    return _MARKER in arrays


def is_activations_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a complete folder written by :class:`ActivationsWriter`."""
    return (Path(path) / FOLDER_MANIFEST).is_file()


def _load_folder(folder: Path) -> Activations:
    try:
        manifest = json.loads((folder / FOLDER_MANIFEST).read_text())
        arrays = {
            name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            for name in ("embeddings", "logits", "labels", "groups")
            if (folder / f"{name}.npy").exists()
        }
    except (OSError, ValueError) as exc:
        raise DataError(f"activations folder '{folder}' cannot be read ({exc})") from None
    missing = {"embeddings", "logits", "labels"} - set(arrays)
    if missing:
        raise DataError(f"activations folder '{folder}' lacks {sorted(f'{m}.npy' for m in missing)}")
    n = int(manifest["n_samples"])
    for name, array in arrays.items():
        if len(array) != n:
            raise DataError(f"activations folder '{folder}': {name}.npy has {len(array)} rows, the manifest {n}")
    groups = arrays.get("groups")
    return Activations(
        embeddings=arrays["embeddings"],
        logits=arrays["logits"],
        labels=np.array(arrays["labels"], dtype=np.int64),
        groups=None if groups is None else np.array(groups, dtype=np.int64),
        model_digest=str(manifest["model_digest"]),
        provider=str(manifest["provider"]),
    )


class ActivationsWriter:
    """Fills an activations folder with rows that arrive in any order, each exactly once.

    The embeddings and logits are ``.npy`` files allocated at their full size and memory-mapped,
    so a batch is written at its rows and nothing is held in memory; :meth:`close` checks that
    every row arrived and writes the manifest. A row that arrives twice (a batch run again after
    a worker died) raises a :class:`DataError` rather than being written silently.

    Parameters
    ----------
    folder : where to write (created; an existing folder must be empty or a previous activations folder).
    labels, groups : ndarray of shape (n_samples,), known before the model runs.
    dim, n_logits : widths of the embeddings and logits.
    dtype, logits_dtype : their dtypes as the model computes them.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        labels: np.ndarray,
        groups: np.ndarray | None,
        *,
        dim: int,
        n_logits: int,
        dtype: np.dtype = np.float32,
        logits_dtype: np.dtype = np.float32,
    ):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"-o '{folder}' is a file; activations other than .npz are written to a folder")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not is_activations_folder(self.folder):
            raise UsageError(f"-o '{folder}' is a folder with other files in it; give a new or empty folder")
        if is_activations_folder(self.folder):
            shutil.rmtree(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"-o '{folder}': cannot create the folder ({exc.strerror or exc})") from None
        n = len(labels)
        self.embeddings = np.lib.format.open_memmap(self.folder / "embeddings.npy", "w+", np.dtype(dtype), (n, dim))
        self.logits = np.lib.format.open_memmap(self.folder / "logits.npy", "w+", np.dtype(logits_dtype), (n, n_logits))
        np.save(self.folder / "labels.npy", np.asarray(labels, dtype=np.int64))
        if groups is not None:
            np.save(self.folder / "groups.npy", np.asarray(groups, dtype=np.int64))
        self.arrived = np.zeros(n, dtype=np.uint8)

    def write(self, rows: np.ndarray, embeddings: np.ndarray, logits: np.ndarray) -> None:
        """Store ``embeddings`` (len(rows), dim) and ``logits`` (len(rows), n_logits) at ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if np.any(self.arrived[rows]):
            first = int(rows[np.flatnonzero(self.arrived[rows])[0]])
            raise DataError(f"activations for sample {first} arrived twice; '{self.folder}' is incomplete")
        self.embeddings[rows] = embeddings
        self.logits[rows] = logits
        self.arrived[rows] = 1

    def close(self, model_digest: str, provider: str) -> None:
        """Check that every row arrived, flush the arrays and write the manifest (last)."""
        missing = np.flatnonzero(self.arrived == 0)
        if len(missing):
            raise DataError(f"activations for {len(missing)} samples never arrived (first: {int(missing[0])})")
        self.embeddings.flush()
        self.logits.flush()
        manifest = {"n_samples": len(self.arrived), "model_digest": model_digest, "provider": provider}
        write_atomic(
            self.folder / FOLDER_MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)), option="-o"
        )
