"""Proving a written model computes what the solver returned, before it is renamed into place.

Verification runs on the written file in its temporary folder:
``onnx.checker`` must pass; opset, IR version, producer, inputs, outputs and metadata must be the
input's; the stored head must be the solution (up to the dtype's rounding or quantization); on a
sample, onnxruntime's logits must equal ``pool(embedding) @ W.T + b`` computed in NumPy, the head's
output must equal its post-ops applied to those, and every graph output that does not depend on
the head must be bit-identical to the input model's.

Two scopes prove the last three. ``head`` (the default) proves structurally that every node and
initializer before and beside the head is byte-identical to the input's (so the embedding and the
outputs not computed from the head are too), then runs only the nodes from the embedding to the
outputs (:mod:`ntonnx.graph.subgraph`) on the sample's embeddings: milliseconds instead of a
second session over the whole model. ``full`` runs the whole written model, and the input model
for the outputs that must be unchanged, end to end. A head the structural proof does not cover
(it reads a graph input other than through the embedding, or holds a subgraph) is checked in full.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ntonnx.data.dataset import ArrayDataset
from ntonnx.errors import ModelError, UsageError, VerificationError, first_line
from ntonnx.graph.heads import HeadSpec, apply_post_ops, head_activations, locate_head, read_head
from ntonnx.graph.index import GraphIndex
from ntonnx.graph.model_io import load_model
from ntonnx.graph.options import VERIFY_SCOPES
from ntonnx.graph.rewrite import METADATA_PREFIX
from ntonnx.graph.runtime import ModelRunner
from ntonnx.graph.subgraph import NotProvable, changed_region, head_model

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
    scope : ``head`` (structural proof + the head's nodes run on the embeddings) or ``full`` (the whole model run).
    """

    n_samples: int
    max_error: float
    tolerance: float
    provider: str
    output_error: float | None = None
    identical_outputs: list[str] = field(default_factory=list)
    changed_outputs: list[str] = field(default_factory=list)
    scope: str = "full"

    def to_dict(self) -> dict:
        return asdict(self)


def verify_written(
    path: Path,
    head: HeadSpec,
    W: np.ndarray,
    b: np.ndarray,
    sample: ArrayDataset | Callable[[], ArrayDataset] | None,
    providers: list[str],
    *,
    original: onnx.ModelProto,
    scope: str = "head",
    head_inputs: np.ndarray | None = None,
) -> Verification:
    """Check the model at ``path`` against ``(W, b)`` and ``original``; raise :class:`VerificationError` if not.

    Parameters
    ----------
    sample : model inputs to run (``full`` scope, and the ``head`` scope without ``head_inputs``), or a
        function making them, called only if they are needed.
    scope : ``head`` or ``full`` (see the module docstring).
    head_inputs : ndarray of shape (n_samples, ...), values of the embedding tensor as the model
        computes it (before the head's pooling) for the ``head`` scope; computed from ``sample`` when None.
    """
    if callable(sample):
        make_sample, sample = sample, None
    else:
        make_sample = None
    if scope not in VERIFY_SCOPES:
        raise ValueError(f"scope must be one of {VERIFY_SCOPES}, got {scope!r}")
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
    dependent, independent = _split_outputs(original, head)
    if scope == "head":
        try:
            return _verify_head(written, original, new_head, head, (stored_W, stored_b), dependent, independent,
                                providers, sample, head_inputs, str(path))  # fmt: skip
        except NotProvable as exc:
            logger.info("verifying the whole written model: %s", exc)
    if sample is None and make_sample is not None:
        sample = make_sample()
    if sample is None:
        raise ValueError("the full verification needs a sample of model inputs")
    return _verify_full(path, written, original, new_head, head, (stored_W, stored_b), dependent, independent,
                        providers, sample)  # fmt: skip


def _verify_head(
    written: onnx.ModelProto,
    original: onnx.ModelProto,
    new_head: HeadSpec,
    head: HeadSpec,
    stored: tuple[np.ndarray, np.ndarray],
    dependent: list[str],
    independent: list[str],
    providers: list[str],
    sample: ArrayDataset | None,
    head_inputs: np.ndarray | None,
    label: str,
) -> Verification:
    """Structural proof that only the head's part changed, then the head's nodes run on the embeddings."""
    region = changed_region(original, written)
    if new_head.embedding in region.reached:
        raise VerificationError(
            f"written model computes the embedding '{new_head.embedding}' differently from the input model "
            f"(changed nodes: {list(region.nodes)}); output not written"
        )
    outputs = [o.name for o in written.graph.output]
    touched = [o for o in outputs if o in region.reached]
    for name in touched:
        if name not in dependent:
            raise VerificationError(
                f"written model's output '{name}' (not computed from the head) differs from the input model's "
                "structurally; output not written"
            )
    if head_inputs is None:
        if sample is None:
            raise NotProvable("no embeddings of the sample were given")
        runner = ModelRunner(written, [new_head.embedding], providers, label, exact=True)
        (head_inputs,) = runner.run(sample, batch_size=64)
    targets = list(dict.fromkeys([new_head.logits, *touched]))
    cut = head_model(written, new_head.embedding, head_inputs.dtype, targets)
    feed = ArrayDataset(
        inputs={new_head.embedding: head_inputs},
        labels=np.zeros(len(head_inputs), dtype=np.int64),
        groups=None,
        source="verification sample",
    )
    runner = ModelRunner(cut, targets, providers, f"{label} (head)", exact=True)
    results = dict(zip(targets, runner.run(feed, batch_size=max(1, len(head_inputs))), strict=True))
    embeddings, logits = head_activations(new_head, head_inputs, results[new_head.logits])
    error, output_error = _check_values(embeddings, logits, results, head, stored)
    return Verification(
        n_samples=len(head_inputs),
        max_error=error,
        tolerance=TOLERANCE.get(head.dtype, DEFAULT_TOLERANCE),
        provider=runner.provider,
        output_error=output_error,
        identical_outputs=independent,
        changed_outputs=_changed(dependent, head),
        scope="head",
    )


def _verify_full(
    path: Path,
    written: onnx.ModelProto,
    original: onnx.ModelProto,
    new_head: HeadSpec,
    head: HeadSpec,
    stored: tuple[np.ndarray, np.ndarray],
    dependent: list[str],
    independent: list[str],
    providers: list[str],
    sample: ArrayDataset,
) -> Verification:
    """The whole written model run on the sample; outputs not computed from the head against the input's."""
    fetch = [new_head.embedding, new_head.logits, *[o for o in dependent if o == head.output], *independent]
    fetch = list(dict.fromkeys(fetch))
    runner = ModelRunner(written, fetch, providers, str(path), exact=True)
    results = dict(zip(fetch, runner.run(sample, batch_size=64), strict=True))
    embeddings, logits = head_activations(new_head, results[new_head.embedding], results[new_head.logits])
    error, output_error = _check_values(embeddings, logits, results, head, stored)
    _check_identical(original, results, independent, fetch, providers, sample)
    return Verification(
        n_samples=len(sample),
        max_error=error,
        tolerance=TOLERANCE.get(head.dtype, DEFAULT_TOLERANCE),
        provider=runner.provider,
        output_error=output_error,
        identical_outputs=independent,
        changed_outputs=_changed(dependent, head),
        scope="full",
    )


def _check_values(
    embeddings: np.ndarray, logits: np.ndarray, results: dict, head: HeadSpec, stored: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float | None]:
    """The logits against ``embedding @ W.T + b`` and the head's output against its post-ops; both errors."""
    tolerance = TOLERANCE.get(head.dtype, DEFAULT_TOLERANCE)
    stored_W, stored_b = stored
    expected = embeddings.astype(np.float64) @ stored_W.T + stored_b
    error = _relative_error(logits, expected)
    if not error <= tolerance:
        raise VerificationError(
            f"written model's logits differ from embedding @ W.T + b by {error:.2e} (> {tolerance}); output not written"
        )
    return float(error), _check_head_output(results, head, expected, tolerance)


def _changed(dependent: list[str], head: HeadSpec) -> list[str]:
    changed = [o for o in dependent if o != head.output]
    if changed:
        logger.info("outputs %s are computed from the head and change with it", changed)
    return changed


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
