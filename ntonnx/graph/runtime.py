"""Running the model once over held-out data to collect embeddings and logits.

The head's input (the embedding) and output (the logits) are added as extra graph outputs, so a
single onnxruntime pass yields both from the same forward computation. Execution providers are
chosen here (CUDA when the GPU build sees a GPU, else CPU) and the one actually used is reported,
because onnxruntime falls back to CPU without saying so.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable

import numpy as np
import onnx

from ntonnx.activations import Activations
from ntonnx.data.dataset import Dataset, InputSpec, first_non_finite_row
from ntonnx.errors import DataError, ModelError, UsageError, first_line, require_onnxruntime
from ntonnx.graph.heads import HeadSpec, head_activations
from ntonnx.graph.model_io import serialize_for_runtime

logger = logging.getLogger("ntonnx")

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(requested: str | None) -> list[str]:
    """The provider list to ask onnxruntime for: ``requested`` (an alias or full name) or auto."""
    ort = require_onnxruntime()
    available = ort.get_available_providers()
    if requested is None or requested == "auto":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    name = _PROVIDER_ALIASES.get(requested.lower(), requested)
    if name not in available:
        raise UsageError(
            f"--provider '{requested}' is not available in this onnxruntime (available: {available}); "
            "CUDA needs pip install 'ntonnx[gpu]' and a visible GPU"
        )
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]


def _session(ort, source, options, providers: list[str], label: str, exact: bool):
    """An onnxruntime session on ``providers``; with ``exact``, CUDA without TF32 where this onnxruntime can."""
    # onnxruntime prints provider fallbacks to stdout, which must stay clean for --json.
    if exact and "CUDAExecutionProvider" in providers:
        no_tf32 = [(p, {"use_tf32": "0"}) if p == "CUDAExecutionProvider" else p for p in providers]
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return ort.InferenceSession(source, sess_options=options, providers=no_tf32)
        except Exception:  # an onnxruntime without the option: load as requested below
            pass
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot load model '{label}': {first_line(exc)}") from None


class ModelRunner:
    """An onnxruntime session over the model with chosen tensors exposed as extra outputs."""

    def __init__(
        self, model: onnx.ModelProto, extra_outputs: list[str], providers: list[str], label: str, *, exact: bool = False
    ):
        """``exact`` keeps onnxruntime to its basic graph optimizations: the extended ones replace a
        dequantized int8 weight's float product by an integer one on dynamically quantized inputs,
        which is faster but no longer the graph's ONNX semantics (verification needs those). It also
        turns off CUDA's TF32 matrix products (on by default on Ampere and later GPUs), which round
        float32 operands to 10 mantissa bits."""
        ort = require_onnxruntime()
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        existing = {o.name for o in probe.graph.output}
        for name in extra_outputs:
            if name not in existing:
                existing.add(name)
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
        self.output_names = list(extra_outputs)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if exact:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        with tempfile.TemporaryDirectory(prefix="ntonnx-") as workdir:
            source = serialize_for_runtime(probe, workdir)
            self.session = _session(ort, source, options, providers, label, exact)
        self.provider = self.session.get_providers()[0]
        if self.provider != providers[0]:
            logger.warning("requested %s but onnxruntime runs on %s", providers[0], self.provider)
        self.inputs = [
            InputSpec(i.name, _numpy_dtype(i.type, label), tuple(i.shape)) for i in self.session.get_inputs()
        ]
        batch_dims = {spec.shape[0] for spec in self.inputs if spec.shape and isinstance(spec.shape[0], int)}
        self.fixed_batch = batch_dims.pop() if len(batch_dims) == 1 else None
        self.label = label

    def run(
        self,
        data: Dataset,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
        order: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Outputs ``self.output_names`` for all samples, concatenated along the batch axis.

        ``order`` (a permutation of the sample indices) puts sample ``order[j]`` in row ``j`` of
        every per-sample output, as the rows arrive: no reordering copy afterwards.
        """
        batch = self.fixed_batch or batch_size
        rows = None if order is None else np.argsort(order)
        stores = [_Rows(len(data), rows) for _ in self.output_names]
        for feed in data.batches(batch):
            n = len(next(iter(feed.values())))
            if self.fixed_batch and n < self.fixed_batch:
                feed = {k: _pad(v, self.fixed_batch) for k, v in feed.items()}
            fed = len(next(iter(feed.values())))
            try:
                results = self.session.run(self.output_names, feed)
            except Exception as exc:
                raise DataError(f"model '{self.label}' failed on data '{data.source}': {first_line(exc)}") from None
            for store, value in zip(stores, results, strict=True):
                store.add(np.asarray(value), n, fed)
            if progress is not None:
                progress(n)
            # Let go of the batch before the next is asked for: a streaming data set then never
            # holds two batches in the model's form at once.
            del feed
        return [store.result() for store in stores]


class _Rows:
    """One output collected across batches: the first ``n`` rows of each batch's value.

    While every batch gives one row per fed sample (embeddings, logits), the rows go straight
    into one array allocated at the first batch (at row ``destination[i]`` for sample ``i`` when
    a destination is given); keeping a list of chunks and concatenating at the end would hold the
    embedding matrix twice at the peak. Any other output (not per sample, or changing shape) is
    kept as chunks and concatenated at the end.
    """

    def __init__(self, total: int, destination: np.ndarray | None = None):
        self.total = total
        self.destination = destination
        self.array: np.ndarray | None = None
        self.done = 0
        self.chunks: list[np.ndarray] | None = None

    def add(self, value: np.ndarray, n: int, fed: int) -> None:
        part = value[:n]
        if self.chunks is None and value.ndim and len(value) == fed and self.done + n <= self.total:
            if self.array is None:
                self.array = np.empty((self.total, *part.shape[1:]), dtype=part.dtype)
            if part.shape[1:] == self.array.shape[1:] and part.dtype == self.array.dtype:
                if self.destination is None:
                    self.array[self.done : self.done + n] = part
                else:
                    self.array[self.destination[self.done : self.done + n]] = part
                self.done += n
                return
        if self.chunks is None:
            self.chunks = [] if self.array is None else [self.array[: self.done]]
            self.array = None
        self.chunks.append(part)

    def result(self) -> np.ndarray:
        if self.chunks is not None:
            rows = np.concatenate(self.chunks)
            if self.destination is not None and len(rows) == self.total:
                placed = np.empty_like(rows)
                placed[self.destination] = rows
                return placed
            return rows
        return self.array[: self.done] if self.array is not None else np.empty((0,))


def extract_activations(
    runner: ModelRunner,
    head: HeadSpec,
    data: Dataset,
    *,
    model_digest: str,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    order: np.ndarray | None = None,
    head_weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> Activations:
    """Run the model over ``data`` and return embeddings and logits of every sample.

    ``runner`` must expose ``[head.embedding, head.logits]`` as its outputs. ``order`` (a
    permutation of the sample indices) makes row ``j`` hold sample ``order[j]``, so that a split
    of the samples can be taken as two contiguous views instead of two copies. A head whose raw
    logits are no graph tensor (``head.logits_computed``) needs ``head_weights``, its ``(W, b)``:
    the logits are then ``embeddings @ W.T + b``.
    """
    embeddings, logits = head_activations(head, *runner.run(data, batch_size, progress, order))
    if head.logits_computed:
        logits = computed_logits(embeddings, *head_weights)
    for name, values in ((head.embedding, embeddings), (head.logits, logits)):
        row = first_non_finite_row(values)
        if row is not None:
            sample = row if order is None else int(order[row])
            raise ModelError(
                f"model '{runner.label}' computes NaN or Inf in '{name}' for sample {sample} of data '{data.source}'"
            )
    labels, groups = data.labels, data.groups
    if order is not None:
        labels, groups = labels[order], None if groups is None else groups[order]
    return Activations(
        embeddings=embeddings,
        logits=logits,
        labels=labels,
        groups=groups,
        model_digest=model_digest,
        provider=runner.provider,
    )


def computed_logits(embeddings: np.ndarray, W: np.ndarray, b: np.ndarray, rows: int = 4096) -> np.ndarray:
    """``embeddings @ W.T + b`` in float64, a block of rows at a time, stored float32 (as the graph's would be).

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, dim)
    W : ndarray of shape (n_logits, dim)
    b : ndarray of shape (n_logits,)

    Returns
    -------
    logits : ndarray of shape (n_samples, n_logits), float32
    """
    logits = np.empty((len(embeddings), len(b)), dtype=np.float32)
    for start in range(0, len(embeddings), rows):
        logits[start : start + rows] = embeddings[start : start + rows].astype(np.float64) @ W.T + b
    return logits


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    repeats = np.repeat(array[-1:], size - len(array), axis=0)
    return np.concatenate([array, repeats])


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _numpy_dtype(ort_type: str, label: str) -> np.dtype:
    if ort_type not in _ORT_TYPES:
        raise ModelError(f"model '{label}' has an input of type {ort_type}, which ntonnx cannot feed")
    return np.dtype(_ORT_TYPES[ort_type])
