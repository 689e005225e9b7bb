"""The public entry points: inspect, extract, evaluate and tune an ONNX classifier.

``inspect_model`` only reads the graph; ``extract`` runs the model over data and returns (or
saves) its activations; ``evaluate`` measures it; ``tune`` runs the whole pipeline
load -> locate head -> extract -> identify -> re-fit -> rewrite -> verify. Each is a few named
steps over a :class:`~ntonnx.session.Session` and returns a result dataclass with a ``to_dict()``
for JSON. The CLI is a thin layer over these.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ntonnx._version import __version__
from ntonnx.activations import Activations, n_label_classes
from ntonnx.data import ArrayDataset, DataOptions, Dataset
from ntonnx.errors import ModelError, UsageError
from ntonnx.files import BackgroundDigest, check_output_path
from ntonnx.graph.heads import HeadSpec, locate_head, locate_head_or_scores, read_head
from ntonnx.graph.model_io import load_model
from ntonnx.graph.options import HeadQuery, RunOptions
from ntonnx.graph.verify import Verification
from ntonnx.method.base import FitInputs
from ntonnx.method.metrics import Metrics, compute_metrics, predict
from ntonnx.method.neurons import NeuronScores, identify
from ntonnx.method.options import TuneOptions
from ntonnx.method.registry import check_tuning_data, get_method
from ntonnx.method.splits import stratified_split
from ntonnx.session import PathLike, ProgressFactory, Session

#: What ``data``/``tune_data``/``eval_data`` accept: a path (any format :func:`ntonnx.data.open_dataset`
#: reads) or an opened data set.
DataLike = PathLike | Dataset


@dataclass
class TensorInfo:
    """A graph input or output: name, element type, and shape with symbolic dims as strings."""

    name: str
    dtype: str
    shape: list[int | str | None]


@dataclass
class ModelInfo:
    """What ``inspect`` reports; ``head`` is None (and ``head_error`` says why) if none was found."""

    path: str
    ir_version: int
    opsets: dict[str, int]
    producer: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    head: HeadSpec | None
    head_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvaluationResult:
    """Accuracies of a model on a labelled data set.

    ``classes`` and ``groups`` map the names given in the data to indices, when labels or
    groups were given as names.
    """

    model: str
    data: str
    provider: str
    head: HeadSpec
    metrics: Metrics
    classes: dict[str, int] | None = None
    groups: dict[str, int] | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "data": self.data,
            "provider": self.provider,
            "head": self.head.to_dict(),
            "classes": self.classes,
            "groups": self.groups,
            "metrics": self.metrics.to_dict(),
        }


@dataclass
class TuneResult:
    """Everything a ``tune`` run did, measured and wrote; ``to_dict()`` is the JSON report.

    ``out`` is the path of the tuned model; ``files`` every file written (the model and its
    external data). ``selected`` and ``method_details`` say what a method that chooses among
    candidates (``auto``) chose and why.
    """

    model: str
    out: str
    files: list[str]
    options: TuneOptions
    head: HeadSpec
    provider: str
    n_identification: int
    n_tuning: int
    suppressed: list[int]
    unscored_classes: list[int]
    evaluated_on: str
    before: Metrics
    after: Metrics
    converged: bool | None
    verification: Verification
    timings: dict[str, float] = field(default_factory=dict)
    classes: dict[str, int] | None = None
    groups: dict[str, int] | None = None
    selected: str | None = None
    method_details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "ntonnx_version": __version__,
            "model": self.model,
            "out": self.out,
            "files": self.files,
            "options": self.options.to_dict(),
            "head": self.head.to_dict(),
            "provider": self.provider,
            "n_identification": self.n_identification,
            "n_tuning": self.n_tuning,
            "n_suppressed": len(self.suppressed),
            "suppressed": self.suppressed,
            "unscored_classes": self.unscored_classes,
            "evaluated_on": self.evaluated_on,
            "classes": self.classes,
            "groups": self.groups,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "converged": self.converged,
            "selected": self.selected,
            "method_details": self.method_details,
            "verification": self.verification.to_dict(),
            "timings_s": self.timings,
        }


def inspect_model(model: PathLike, *, head: HeadQuery | None = None) -> ModelInfo:
    """Describe ``model``'s inputs, outputs and head; never runs it.

    A graph without a recognisable head is described all the same (``head`` None, ``head_error``
    saying why); a bad option (``head.head_node`` naming no node, ...) raises :class:`UsageError`.
    """
    proto = load_model(model).proto
    spec, error = None, None
    try:
        spec = locate_head(proto, **asdict(head or HeadQuery()))
    except ModelError as exc:
        error = str(exc)
    initializers = {t.name for t in proto.graph.initializer}
    return ModelInfo(
        path=str(model),
        ir_version=proto.ir_version,
        opsets={entry.domain or "ai.onnx": entry.version for entry in proto.opset_import},
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        inputs=[_tensor_info(v) for v in proto.graph.input if v.name not in initializers],
        outputs=[_tensor_info(v) for v in proto.graph.output],
        head=spec,
        head_error=error,
    )


def extract(
    model: PathLike,
    data: DataLike,
    *,
    head: HeadQuery | None = None,
    run: RunOptions | None = None,
    data_options: DataOptions | None = None,
    progress: ProgressFactory | None = None,
    save_to: PathLike | None = None,
    force: bool = False,
) -> Activations:
    """Run ``model`` once over ``data``; return embeddings, logits, labels (and groups).

    ``data`` is any source :func:`ntonnx.data.open_dataset` reads (``data_options`` says how),
    or an opened :class:`~ntonnx.data.Dataset`; it is streamed, never held whole. ``save_to``
    also writes the activations (atomically) for ``tune --activations``; it may not name the
    model or the data file.
    """
    if save_to is not None:
        check_output_path(save_to, option="-o", inputs=_paths(model, data), force=True)
    session = Session(model, head=head, run=run, data_options=data_options)
    acts = session.activations(session.open_data(data), progress)
    if save_to is not None:
        acts.save(save_to)
    return acts


def evaluate(
    model: PathLike,
    data: DataLike,
    *,
    head: HeadQuery | None = None,
    run: RunOptions | None = None,
    data_options: DataOptions | None = None,
    progress: ProgressFactory | None = None,
) -> EvaluationResult:
    """Accuracy, per-class and (with groups) per-group accuracy of ``model`` on ``data``.

    Needs no head: without one, the chosen output's scores are evaluated (:mod:`ntonnx.graph.heads.scores`).
    """
    session = Session(model, head=head, run=run, data_options=data_options, locate=locate_head_or_scores)
    source = session.open_data(data)
    acts = session.activations(source, progress)
    return EvaluationResult(
        model=str(model),
        data=_describe(data),
        provider=acts.provider,
        head=session.head,
        metrics=compute_metrics(predict(acts.logits), acts.labels, acts.groups),
        classes=_names(source, "class_names"),
        groups=_names(source, "group_names"),
    )


def tune(
    model: PathLike,
    out: PathLike,
    *,
    data: DataLike | None = None,
    activations: PathLike | Activations | None = None,
    tune_data: DataLike | Activations | None = None,
    eval_data: DataLike | Activations | None = None,
    options: TuneOptions | None = None,
    head: HeadQuery | None = None,
    run: RunOptions | None = None,
    data_options: DataOptions | None = None,
    force: bool = False,
    progress: ProgressFactory | None = None,
) -> TuneResult:
    """Re-solve ``model``'s head and write the tuned model to ``out``.

    Parameters
    ----------
    data : labelled held-out data (any format :func:`ntonnx.data.open_dataset` reads, or a
        :class:`~ntonnx.data.Dataset`); the identification set, and also the tuning set (split
        by class, seeded) when ``tune_data`` is not given.
    activations : embeddings saved by :func:`extract`, instead of ``data``.
    tune_data : a separate tuning set (data or activations file).
    eval_data : data for the before/after table (default: the held-out data itself).
    options : the method and its settings (default: the paper's NeuronTune).
    head, run : which head, and how the model runs.
    data_options : how to read data that is not model-ready arrays; applies to ``data``,
        ``tune_data`` and ``eval_data``, and class names map to the same indices in all three.
    force : replace ``out`` if it exists (never an input file).
    """
    options = options or TuneOptions()
    method = get_method(options.method)
    method.check(options)
    if (data is None) == (activations is None):
        raise UsageError("give exactly one of --data or --activations")
    heldout_given = data if data is not None else activations
    session = Session(model, head=head, run=run, data_options=data_options)
    out = check_output_path(out, option="--out", inputs=_paths(model, heldout_given, tune_data, eval_data), force=force)
    digests = {str(p): BackgroundDigest(p) for p in _paths(heldout_given, tune_data, eval_data)}
    sources = _open_sources(session, heldout_given, tune_data, eval_data)
    tuning_source, tuning_given = (
        (sources.tuning, tune_data) if sources.tuning is not None else (sources.heldout, heldout_given)
    )
    check_tuning_data(
        method, tuning_source.labels, tuning_source.groups, session.head.n_classes, _describe(tuning_given)
    )
    timings: dict[str, float] = {}
    with _timed(timings, "extraction"):
        heldout, identification, tuning, evaluation = _extract_roles(session, sources, options, progress)
    original = read_head(session.loaded.proto, session.head)
    with _timed(timings, "identification"):
        scores = _scores(identification, session.head.n_classes) if method.needs_identification else None
    with _timed(timings, "solve"):
        refit = method.fit(FitInputs(tuning, identification, scores, original, session.head.has_bias, options))
    suppressed = [int(i) for i in refit.suppressed]
    provenance = {
        "version": __version__,
        "method": options.method,
        "options": options.to_dict(),
        "suppressed_neurons": suppressed,
        **({"selected": refit.selected} if refit.selected else {}),
        "data_sha256": {path: digest.result() for path, digest in digests.items()},
    }
    with _timed(timings, "rewrite"):
        written = session.write(out, refit.W, refit.b, provenance, sources.verification_sample)
    evaluated = evaluation or heldout
    return TuneResult(
        model=str(model),
        out=str(out),
        files=[str(f) for f in written.files],
        options=options,
        head=session.head,
        provider=heldout.provider,
        n_identification=len(identification) if method.needs_identification else 0,
        n_tuning=len(tuning),
        suppressed=suppressed,
        unscored_classes=[] if scores is None else [int(c) for c in scores.unscored_classes],
        evaluated_on=_describe(eval_data if eval_data is not None else heldout_given),
        before=compute_metrics(predict(evaluated.logits), evaluated.labels, evaluated.groups),
        after=compute_metrics(_predictions(evaluated.embeddings, refit.W, refit.b), evaluated.labels, evaluated.groups),
        converged=refit.converged,
        verification=written.verification,
        timings=timings,
        classes=_names(sources.heldout, "class_names"),
        groups=_names(sources.heldout, "group_names"),
        selected=refit.selected,
        method_details=refit.details,
    )


@dataclass
class _Sources:
    """The opened data of a ``tune`` run: held-out (both roles unless ``tuning``), tuning, evaluation."""

    heldout: Dataset | Activations
    tuning: Dataset | Activations | None
    evaluation: Dataset | Activations | None
    verification_sample: ArrayDataset


def _open_sources(session: Session, heldout_given, tune_data, eval_data) -> _Sources:
    """Open every data set of a run; the held-out set's class names fix the mapping for the others."""
    heldout = session.open_data(heldout_given)
    classes = getattr(heldout, "class_names", None)
    tuning = session.open_data(tune_data, classes=classes) if tune_data is not None else None
    evaluation = session.open_data(eval_data, classes=classes) if eval_data is not None else None
    sample = session.verification_sample(heldout if isinstance(heldout, Dataset) else None)
    return _Sources(heldout, tuning, evaluation, sample)


def _extract_roles(
    session: Session, sources: _Sources, options: TuneOptions, progress: ProgressFactory | None
) -> tuple[Activations, Activations, Activations, Activations | None]:
    """Held-out, identification, tuning and evaluation activations.

    With one data set, a seeded class-stratified split gives both roles; extracted with the
    identification samples first, the two parts are views of one array, not copies.
    """
    split = None
    if sources.tuning is None:
        split = stratified_split(sources.heldout.labels, options.split, options.seed)
    in_order = split is not None and isinstance(sources.heldout, Dataset)
    heldout = session.activations(sources.heldout, progress, np.concatenate(split) if in_order else None)
    tuning = session.activations(sources.tuning, progress) if sources.tuning is not None else None
    evaluation = session.activations(sources.evaluation, progress) if sources.evaluation is not None else None
    if split is None:
        return heldout, heldout, tuning, evaluation
    if in_order:
        cut = len(split[0])
        return heldout, heldout.subset(slice(0, cut)), heldout.subset(slice(cut, None)), evaluation
    return heldout, heldout.subset(split[0]), heldout.subset(split[1]), evaluation


def _scores(identification: Activations, n_logits: int) -> NeuronScores:
    """NeuronTune's scores from the original model's own mistakes on the identification set."""
    predictions = predict(identification.logits)
    return identify(identification.embeddings, identification.labels, predictions, n_label_classes(n_logits))


def _predictions(embeddings: np.ndarray, W: np.ndarray, b: np.ndarray, rows: int = 4096) -> np.ndarray:
    """What the head ``(W, b)`` predicts, in float64 a block of rows at a time (no float64 copy of all)."""
    blocks = [predict(embeddings[i : i + rows] @ W.T + b) for i in range(0, len(embeddings), rows)]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def _paths(*given) -> list[Path]:
    """The file paths among ``given`` (data may also be opened objects, or absent)."""
    return [Path(g) for g in given if isinstance(g, str | os.PathLike)]


def _names(source, attribute: str) -> dict[str, int] | None:
    """Name -> index of a data set's classes or groups, when they were given as names."""
    names = getattr(source, attribute, None)
    return None if names is None else {name: i for i, name in enumerate(names)}


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 4)


def _describe(source) -> str:
    if isinstance(source, Dataset):
        return source.source
    if isinstance(source, Activations):
        return "activations"
    return str(source)


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return TensorInfo(name=value.name, dtype=dtype, shape=shape)
