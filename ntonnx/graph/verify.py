"""Proving a written model computes what the solver returned, before it is renamed into place.

Verification runs on the written file in its temporary folder:
``onnx.checker`` must pass (or fail only as it does on the input model); opset, IR version,
producer, inputs, outputs and metadata must be the input's; the stored head must be the solution
(up to the dtype's rounding or quantization); on a sample, onnxruntime's logits must equal
``pool(embedding) @ W.T + b`` computed in NumPy and the head's output its post-ops applied to
those, each element within the float rounding of its magnitudes (:mod:`ntonnx.graph.rounding`);
and every graph output that does not depend on the head must be bit-identical to the input model's.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ntonnx.data.dataset import ArrayDataset
from ntonnx.errors import ModelError, UsageError, VerificationError, first_line
from ntonnx.graph.heads import HeadSpec, apply_post_ops, head_activations, locate_head, read_head
from ntonnx.graph.index import GraphIndex
from ntonnx.graph.model_io import load_model, serialize_for_runtime
from ntonnx.graph.rewrite import METADATA_PREFIX
from ntonnx.graph.rounding import logit_bounds, output_bounds, worst_excess
from ntonnx.graph.runtime import ModelRunner

logger = logging.getLogger("ntonnx")

#: Relative error allowed between the stored head and the solution, by stored dtype: half a
#: quantization step for integers, the type's rounding for floats.
WEIGHT_TOLERANCE = {"int8": 4e-3, "uint8": 4e-3, "int16": 2e-5, "uint16": 2e-5, "float16": 1e-2, "bfloat16": 2e-2}
DEFAULT_WEIGHT_TOLERANCE = 1e-5


@dataclass
class Verification:
    """Outcome of checking a written model.

    Attributes
    ----------
    n_samples : size of the verification sample.
    max_error : largest relative error of the logits against ``pool(embedding) @ W.T + b``
        (largest absolute error over ``max(1, largest |logit|)``).
    tolerance : the largest per-logit bound, relative in the same way (each logit has its own
        bound from the float rounding of the magnitudes it sums; :mod:`ntonnx.graph.rounding`).
    margin : largest error as a fraction of its own bound, over the logits and the head's output
        (verification passes at <= 1).
    provider : execution provider that ran the check.
    output_error : largest relative error of the head's graph output against its post-ops
        applied in NumPy (None when a post-op such as ZipMap is not modelled).
    identical_outputs : other graph outputs checked bit-identical to the input model's.
    changed_outputs : other graph outputs computed from the head (e.g. a label), which change with it.
    """

    n_samples: int
    max_error: float
    tolerance: float
    margin: float
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
    _check_checker(path, original)
    written = load_model(path).proto
    _check_envelope(written, original)
    new_head = _relocate(written, head)
    stored_W, stored_b = read_head(written, new_head)
    weight_tolerance = WEIGHT_TOLERANCE.get(head.dtype, DEFAULT_WEIGHT_TOLERANCE)
    weight_error = max(_relative_error(stored_W, W), _relative_error(stored_b, b))
    if weight_error > weight_tolerance:
        raise VerificationError(
            f"written head weights differ from the solution by {weight_error:.2e} (> {weight_tolerance})"
        )
    dependent, independent = _split_outputs(original, head)
    fetch = [new_head.embedding, new_head.logits, *[o for o in dependent if o == head.output], *independent]
    fetch = list(dict.fromkeys(fetch))
    runner = ModelRunner(written, fetch, providers, str(path), exact=True)
    results = dict(zip(fetch, runner.run(sample, batch_size=64), strict=True))
    expected, bounds, logits_dtype, error, margin = _check_logits(
        new_head, results[new_head.embedding], results[new_head.logits], stored_W, stored_b
    )
    output_error, output_margin = _check_head_output(results, new_head, expected, bounds, logits_dtype)
    _check_identical(original, results, independent, fetch, providers, sample)
    changed = [o for o in dependent if o != head.output]
    if changed:
        logger.info("outputs %s are computed from the head and change with it", changed)
    return Verification(
        n_samples=len(sample),
        max_error=float(error),
        tolerance=float(bounds.max(initial=0.0) / max(1.0, float(np.abs(expected).max(initial=0.0)))),
        margin=max(margin, output_margin or 0.0),
        provider=runner.provider,
        output_error=output_error,
        identical_outputs=independent,
        changed_outputs=changed,
    )


def _check_logits(
    head: HeadSpec, raw: np.ndarray, fetched: np.ndarray, W: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.dtype, float, float]:
    """onnxruntime's logits against ``pool(raw) @ W.T + b``, each within its own float rounding bound.

    Returns the NumPy logits (n_samples, n_classes), their bounds, the graph's logits dtype, the
    largest relative error and the largest error as a fraction of its bound.
    """
    embeddings, logits = head_activations(head, raw, fetched)
    expected = embeddings.astype(np.float64) @ W.T + b
    # The magnitudes each logit sums, per position before a mean pooling (the graph sums them so).
    magnitude = head_activations(head, np.abs(raw), logits)[0].astype(np.float64) @ np.abs(W).T + np.abs(b)
    positions = raw.size // max(embeddings.size, 1) if head.pooling and head.pooling.kind != "take" else 1
    bounds = logit_bounds(expected, magnitude, b, terms=head.dim + positions, dtype=logits.dtype)
    # A LinearClassifier's scores hold its post_transform applied: compared with that of the NumPy logits.
    scores, allowed = expected, bounds
    if head.logits_computed:
        scores = apply_post_ops(expected, head.inner_post_ops)
        allowed = output_bounds(expected, bounds, head.inner_post_ops, dtype=logits.dtype, logits_dtype=logits.dtype)
    margin, where = worst_excess(logits, scores, allowed)
    if not margin <= 1:
        what = " -> ".join(["embedding @ W.T + b", *head.inner_post_ops])
        raise VerificationError(
            f"written model's logits differ from {what} by {_excess(logits, scores, where)} at sample {where[0]}, "
            f"class {where[1]}, more than {logits.dtype} rounding of these magnitudes allows "
            f"({allowed[where]:.2e}); output not written"
        )
    return expected, bounds, logits.dtype, _relative_error(logits, scores), margin


def _check_checker(path: Path, original: onnx.ModelProto) -> None:
    """``onnx.checker`` passes on the written model, or fails exactly as it does on the input.

    Models that onnxruntime runs do not all pass the checker (an output declared without a type,
    for one); such an input is not refused after its whole run. The input is checked only when
    the output fails, once: the rewrite is refused when it fails differently. The checker reports
    only its first error, so one the rewrite added behind the input's own is left to the runtime
    checks that follow.
    """
    written_error = _checker_error(str(path))
    if written_error is None:
        return
    input_error = _checker_error(original)
    if written_error != input_error:
        raise VerificationError(f"written model fails onnx.checker: {written_error}")
    logger.warning("the written model fails onnx.checker as the input model does: %s", written_error)


def _checker_error(model: onnx.ModelProto | bytes | str) -> str | None:
    """The first line of ``onnx.checker``'s complaint about ``model`` (a proto, its bytes or a path), or None."""
    if isinstance(model, onnx.ModelProto):  # a proto past protobuf's 2 GB is checked from a file
        with tempfile.TemporaryDirectory(prefix="ntonnx-") as workdir:
            return _checker_error(serialize_for_runtime(model, workdir))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        return first_line(exc)
    return None


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
    # every output of the node reading the weight: a LinearClassifier's label as well as its scores
    reached = index.downstream([*index.producer(head.weight.consumer).output, head.logits])
    dependent = [o.name for o in original.graph.output if o.name in reached]
    independent = [o.name for o in original.graph.output if o.name not in reached and o.type.HasField("tensor_type")]
    return dependent, independent


def _check_head_output(
    results: dict, head: HeadSpec, expected: np.ndarray, bounds: np.ndarray, logits_dtype: np.dtype
) -> tuple[float | None, float | None]:
    """The head's graph output against its post-ops applied to the NumPy logits: relative error, margin."""
    if head.output not in results or head.output == head.logits:
        return None, None
    post_ops = [*head.inner_post_ops, *head.post_ops]
    want = apply_post_ops(expected, post_ops)
    got = results[head.output]
    if want is None or got.dtype.kind != "f":
        return None, None
    allowed = output_bounds(expected, bounds, post_ops, dtype=got.dtype, logits_dtype=logits_dtype)
    if allowed is None:
        return None, None
    got = got.reshape(want.shape)
    margin, where = worst_excess(got, want, allowed)
    if not margin <= 1:
        raise VerificationError(
            f"written model's output '{head.output}' differs from {' -> '.join(post_ops)} of the expected "
            f"logits by {_excess(got, want, where)} at sample {where[0]}, class {where[1]}, more than "
            f"{got.dtype} rounding of these magnitudes allows ({allowed[where]:.2e}); output not written"
        )
    return _relative_error(got, want), margin


def _excess(got: np.ndarray, expected: np.ndarray, where: tuple[int, ...]) -> str:
    return f"{abs(float(got[where]) - float(expected[where])):.2e}"


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
