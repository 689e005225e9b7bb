"""The hand-off between the graph side and the method side: what one model pass yields.

The graph side (:mod:`ntonnx.graph.runtime`) produces :class:`Activations` by running the model;
the method side (:mod:`ntonnx.method`) re-fits the head from them. This module is NumPy only, so
the numerical code never needs onnx or onnxruntime, and activations saved by ``ntonnx extract``
can be tuned on a machine without the model runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ntonnx.errors import DataError
from ntonnx.files import read_npz, write_atomic

_MARKER = "ntonnx_activations"


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
        """Write an ``.npz`` that :meth:`load` and ``ntonnx tune --activations`` read back."""
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
        """Read a file written by :meth:`save`."""
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
