"""Writing the tuned model and proving it computes what the solver returned.

The output is a copy of the input with only the head's parameters changed (a fresh initializer
where the head shared one) and ``metadata_props`` recording what ntonnx did. Verification runs on
the written file before it is renamed into place: ``onnx.checker`` must pass, and onnxruntime's
logits on a sample must equal ``embedding @ W.T + b`` computed in NumPy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ntonnx.data import HeldOutData
from ntonnx.errors import VerificationError, first_line
from ntonnx.heads import HeadSpec, locate_head, read_head, write_head
from ntonnx.model_io import load_model
from ntonnx.runtime import ModelRunner

METADATA_PREFIX = "ntonnx."
#: Relative error allowed between onnxruntime and NumPy logits, by stored weight dtype.
TOLERANCE = {"float16": 1e-2, "bfloat16": 2e-2}
DEFAULT_TOLERANCE = 1e-5


@dataclass
class Verification:
    """Outcome of checking a written model: the largest relative logit error and its bound."""

    n_samples: int
    max_error: float
    tolerance: float
    provider: str

    def to_dict(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "max_error": self.max_error,
            "tolerance": self.tolerance,
            "provider": self.provider,
        }


def tuned_model(
    model: onnx.ModelProto, head: HeadSpec, W: np.ndarray, b: np.ndarray, provenance: dict[str, object]
) -> onnx.ModelProto:
    """A copy of ``model`` whose head computes ``embedding @ W.T + b``, stamped with ``provenance``.

    Earlier ``ntonnx.*`` metadata entries (from tuning a tuned model) are replaced; all other
    metadata, inputs, outputs, opset and nodes are kept as they are.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    write_head(copy, head, W, b)
    kept = [(p.key, p.value) for p in copy.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del copy.metadata_props[:]
    for key, value in kept:
        copy.metadata_props.add(key=key, value=value)
    for key, value in provenance.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        copy.metadata_props.add(key=METADATA_PREFIX + key, value=text)
    return copy


def verify_written(
    path: Path,
    head: HeadSpec,
    W: np.ndarray,
    b: np.ndarray,
    sample: HeldOutData,
    providers: list[str],
) -> Verification:
    """Check the model at ``path`` against ``(W, b)``; raise :class:`VerificationError` if it differs."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"written model fails onnx.checker: {first_line(exc)}") from None
    written = load_model(path).proto
    stored_W, stored_b = read_head(written, locate_head(written, head_node=head.logits))
    tolerance = TOLERANCE.get(head.dtype, DEFAULT_TOLERANCE)
    weight_error = max(_relative_error(stored_W, W), _relative_error(stored_b, b))
    if weight_error > tolerance:
        raise VerificationError(f"written head weights differ from the solution by {weight_error:.2e} (> {tolerance})")
    runner = ModelRunner(written, [head.embedding, head.logits], providers, str(path))
    embeddings, logits = runner.run(sample, batch_size=64)
    expected = embeddings.astype(np.float64) @ stored_W.T + stored_b
    error = _relative_error(logits.reshape(expected.shape), expected)
    if not error <= tolerance:
        raise VerificationError(
            f"written model's logits differ from embedding @ W.T + b by {error:.2e} (> {tolerance}); output not written"
        )
    return Verification(n_samples=len(sample), max_error=float(error), tolerance=tolerance, provider=runner.provider)


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(got.astype(np.float64) - expected).max(initial=0.0) / scale)
