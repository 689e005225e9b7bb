"""Proving a written model computes what the solver returned, before it is renamed into place.

Verification runs on the written file in its temporary folder:
``onnx.checker`` must pass; opset, IR version, producer, inputs, outputs and metadata must be the
input's; the stored head must be the solution (up to the dtype's rounding or quantization); on a
sample, onnxruntime's logits must equal ``pool(embedding) @ W.T + b`` computed in NumPy, the head's
output must equal its post-ops applied to those, and every graph output that does not depend on
the head must be bit-identical to the input model's.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ntonnx.data.dataset import ArrayDataset
from ntonnx.errors import ModelError, UsageError, VerificationError, first_line
from ntonnx.graph.heads import HeadSpec, apply_post_ops, head_activations, locate_head, read_head
from ntonnx.graph.index import GraphIndex
from ntonnx.graph.model_io import load_model
from ntonnx.graph.rewrite import METADATA_PREFIX
from ntonnx.graph.runtime import ModelRunner

logger = logging.getLogger("ntonnx")

#: Relative error allowed between onnxruntime and NumPy logits, by stored weight dtype.
TOLERANCE = {"float16": 1e-2, "bfloat16": 2e-2}
DEFAULT_TOLERANCE = 1e-5
#: Relative error allowed between the stored head and the solution: half a quantization step.
WEIGHT_TOLERANCE = {"int8": 4e-3, "uint8": 4e-3, "int16": 2e-5, "uint16": 2e-5}


@dataclass
class Verification:
    """Outcome of checking a written model.

    Attributes
    ----------
    n_samples : size of the verification sample.
    max_error : largest relative error of the logits against ``pool(embedding) @ W.T + b``.
    tolerance : the bound it had to meet.
    provider : execution provider that ran the check.
    output_error : largest relative error of the head's graph output against its post-ops
        applied in NumPy (None when a post-op such as ZipMap is not modelled).
    identical_outputs : other graph outputs checked bit-identical to the input model's.
    changed_outputs : other graph outputs computed from the head (e.g. a label), which change with it.
    """

    n_samples: int
    max_error: float
    tolerance: float
    provider: str
    output_error: float | None = None
    identical_outputs: list[str] = field(default_factory=list)
    changed_outputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def verify_written(
    path: Path,
    head: HeadSpec,
    W: np.ndarray,
    b: np.ndarray,
    sample: ArrayDataset,
    providers: list[str],
    *,
    original: onnx.ModelProto,
) -> Verification:
    """Check the model at ``path`` against ``(W, b)`` and ``original``; raise :class:`VerificationError` if not."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"written model fails onnx.checker: {first_line(exc)}") from None
    written = load_model(path).proto
    _check_envelope(written, original)
    new_head = _relocate(written, head)
    stored_W, stored_b = read_head(written, new_head)
    weight_tolerance = WEIGHT_TOLERANCE.get(head.dtype, TOLERANCE.get(head.dtype, DEFAULT_TOLERANCE))
    weight_error = max(_relative_error(stored_W, W), _relative_error(stored_b, b))
    if weight_error > weight_tolerance:
        raise VerificationError(
            f"written head weights differ from the solution by {weight_error:.2e} (> {weight_tolerance})"
        )
    tolerance = TOLERANCE.get(head.dtype, DEFAULT_TOLERANCE)
    dependent, independent = _split_outputs(original, head)
    fetch = [new_head.embedding, new_head.logits, *[o for o in dependent if o == head.output], *independent]
    fetch = list(dict.fromkeys(fetch))
    runner = ModelRunner(written, fetch, providers, str(path), exact=True)
    results = dict(zip(fetch, runner.run(sample, batch_size=64), strict=True))
    embeddings, logits = head_activations(new_head, results[new_head.embedding], results[new_head.logits])
    expected = embeddings.astype(np.float64) @ stored_W.T + stored_b
    error = _relative_error(logits, expected)
    if not error <= tolerance:
        raise VerificationError(
            f"written model's logits differ from embedding @ W.T + b by {error:.2e} (> {tolerance}); output not written"
        )
    output_error = _check_head_output(results, head, expected, tolerance)
    _check_identical(original, results, independent, fetch, providers, sample)
    changed = [o for o in dependent if o != head.output]
    if changed:
        logger.info("outputs %s are computed from the head and change with it", changed)
    return Verification(
        n_samples=len(sample),
        max_error=float(error),
        tolerance=tolerance,
        provider=runner.provider,
        output_error=output_error,
        identical_outputs=independent,
        changed_outputs=changed,
    )


def _check_envelope(written: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Opset, IR version, producer, graph inputs/outputs and user metadata are the input's."""

    def envelope(model: onnx.ModelProto) -> dict:
        return {
            "IR version": model.ir_version,
            "opsets": sorted((o.domain, o.version) for o in model.opset_import),
            "producer": (model.producer_name, model.producer_version),
            "inputs": [i.SerializeToString() for i in model.graph.input if not _is_initializer(model, i.name)],
            "outputs": [o.SerializeToString() for o in model.graph.output],
            "metadata": [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)],
        }

    got, want = envelope(written), envelope(original)
    for key in want:
        if got[key] != want[key]:
            raise VerificationError(f"written model's {key} differ from the input model's")


def _is_initializer(model: onnx.ModelProto, name: str) -> bool:
    return any(t.name == name for t in model.graph.initializer)


def _relocate(written: onnx.ModelProto, head: HeadSpec) -> HeadSpec:
    """The head in the written model (a rebuilt head has new nodes but keeps its tensors)."""
    for name in (head.weight.consumer, head.nodes[-1], head.logits):
        try:
            return locate_head(written, head_node=name, output=head.output)
        except (ModelError, UsageError):
            continue
    raise VerificationError(f"written model has no head feeding '{head.output}' any more")


def _split_outputs(original: onnx.ModelProto, head: HeadSpec) -> tuple[list[str], list[str]]:
    """Graph outputs computed from the head, and the tensor outputs that are not."""
    index = GraphIndex(original)
    reached = index.downstream([head.weight.consumer, head.logits])
    dependent = [o.name for o in original.graph.output if o.name in reached]
    independent = [o.name for o in original.graph.output if o.name not in reached and o.type.HasField("tensor_type")]
    return dependent, independent


def _check_head_output(results: dict, head: HeadSpec, expected: np.ndarray, tolerance: float) -> float | None:
    """The head's graph output against its post-ops applied to the NumPy logits."""
    if head.output not in results or head.output == head.logits:
        return None
    want = apply_post_ops(expected, head.post_ops)
    got = results[head.output]
    if want is None or got.dtype.kind != "f":
        return None
    error = _relative_error(got.reshape(want.shape), want)
    if not error <= tolerance:
        raise VerificationError(
            f"written model's output '{head.output}' differs from {' -> '.join(head.post_ops)} of the "
            f"expected logits by {error:.2e} (> {tolerance}); output not written"
        )
    return float(error)


def _check_identical(
    original: onnx.ModelProto,
    results: dict,
    independent: list[str],
    fetch: list[str],
    providers: list[str],
    sample: ArrayDataset,
) -> None:
    """Every output that does not depend on the head equals the input model's, bit for bit."""
    if not independent:
        return
    runner = ModelRunner(original, fetch, providers, "input model", exact=True)
    before = dict(zip(fetch, runner.run(sample, batch_size=64), strict=True))
    for name in independent:
        a, b = before[name], results[name]
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            raise VerificationError(
                f"written model's output '{name}' (not computed from the head) differs from the input model's; "
                "output not written"
            )


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(got.astype(np.float64) - expected).max(initial=0.0) / scale)
