"""The public entry points: inspect, extract, evaluate and tune an ONNX classifier.

``inspect_model`` only reads the graph; ``extract`` runs the model over data and returns (or
saves) its activations; ``evaluate`` measures it; ``tune`` runs the whole pipeline
load -> locate head -> extract -> identify -> re-fit -> rewrite -> verify. Each is a few named
steps over a :class:`~ntonnx.session.Session` and returns a result dataclass with a ``to_dict()``
for JSON. The CLI is a thin layer over these.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ntonnx._version import __version__
from ntonnx.activations import Activations, n_label_classes
from ntonnx.data import DataOptions, Dataset
from ntonnx.errors import ModelError, UsageError
from ntonnx.files import BackgroundDigest, check_output_paths, write_atomic
from ntonnx.graph.heads import HeadSpec, locate_head, locate_head_or_scores, read_head
from ntonnx.graph.model_io import load_model
from ntonnx.graph.options import HeadQuery, RunOptions
from ntonnx.graph.verify import Verification
from ntonnx.method.base import FitInputs, Method, Refit
from ntonnx.method.class_mapping import check_class_mapping
from ntonnx.method.metrics import Metrics, compute_metrics, predict
from ntonnx.method.neurons import NeuronScores, identify
from ntonnx.method.options import TuneOptions
from ntonnx.method.registry import check_tuning_data, get_method
from ntonnx.method.solve import fitted_rows
from ntonnx.method.splits import split_roles
from ntonnx.report.fields import report_fields
from ntonnx.session import PathLike, ProgressFactory, Session

#: What ``data``/``tune_data``/``eval_data`` accept: a path (any format :func:`ntonnx.data.open_dataset`
#: reads) or an opened data set.
DataLike = PathLike | Dataset

logger = logging.getLogger("ntonnx")


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
    candidates (``auto``) chose and why; ``kept_original`` that a method's no-harm guard kept the
    original head (the written model computes what the input does). ``report`` holds what the HTML
    report draws (confusion matrices, the spuriousness scores, the head's change, names, digests; see
    :func:`ntonnx.report.fields.report_fields`), merged into ``to_dict()``.
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
    kept_original: bool = False
    method_details: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)

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
            "kept_original": self.kept_original,
            "method_details": self.method_details,
            "verification": self.verification.to_dict(),
            "timings_s": self.timings,
            **self.report,
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
    also writes the activations (atomically) for ``tune --activations``; it follows the rule of
    every output (:func:`ntonnx.files.check_output_path`): never an input, an existing file only
    with ``force``.
    """
    session = Session(model, head=head, run=run, data_options=data_options)
    to_folder = save_to is not None and Path(save_to).suffix.lower() != ".npz"
    if to_folder:
        _check_activations_folder(Path(save_to), _inputs(session, data), force)
    elif save_to is not None:
        check_output_paths({"-o": save_to}, inputs=_inputs(session, data), force=force)
    if to_folder and session.run.engine == "ray":  # the workers' rows go straight to the output folder
        return session.activations(session.open_data(data), progress, folder=save_to)
    acts = session.activations(session.open_data(data), progress)
    if save_to is not None:
        acts.save(save_to)
    return acts


def _check_activations_folder(folder: Path, inputs: list, force: bool) -> None:
    """A folder output (see :meth:`Activations.save`): never an input, an existing one only with ``force``."""
    from ntonnx.activations import is_activations_folder

    if any(Path(p).resolve() == folder.resolve() for p in inputs):
        raise UsageError(f"-o '{folder}' is an input; choose another path")
    if is_activations_folder(folder) and not force:
        raise UsageError(f"-o '{folder}' already exists; pass --force to replace it")


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
    report: PathLike | None = None,
    report_html: PathLike | None = None,
    plot: PathLike | None = None,
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
    force : replace ``out`` (and ``report``) if it exists (never an input file).
    report : also write the JSON report (``TuneResult.to_dict()``) to this file, atomically.
    report_html, plot : also write the report as one self-contained HTML page, and its main
        figure as a PNG (:mod:`ntonnx.report`; need the ``[report]`` extra, checked first).

    Every output path (``out``, its ``.data`` file when the model keeps external data, ``report``,
    ``report_html``, ``plot``) is checked before any work (:func:`ntonnx.files.check_output_paths`): never an input (the
    model, its data files, any data, tokenizer or preprocessing file), never each other.
    """
    options = options or TuneOptions()
    method = get_method(options.method)
    method.check(options)
    if (data is None) == (activations is None):
        raise UsageError("give exactly one of --data or --activations")
    given = _Given(data if data is not None else activations, tune_data, eval_data)
    session = Session(model, head=head, run=run, data_options=data_options)
    outputs = _checked_outputs(session, given, out, report, report_html, plot, force)
    digests = {str(p): BackgroundDigest(p) for p in _paths(*given.all)}
    sources = _open_sources(session, given)
    tuning_source, tuning_given = sources.tuning_source(given)
    check_tuning_data(method, tuning_source.labels, tuning_source.groups, session.head.n_classes, tuning_given)
    timings: dict[str, float] = {}
    _import_in_background(_SOLVER_MODULES)
    with _timed(timings, "extraction"):
        roles = _extract_roles(session, sources, options, progress, split_heldout=not method.uses_all_heldout)
    _check_class_orders(session, sources, roles, given)
    original = read_head(session.loaded.proto, session.head)
    with _timed(timings, "identification"):
        scores = _scores(roles.identification, session.head.n_classes) if method.needs_identification else None
    with _timed(timings, "solve"):
        inputs = FitInputs(roles.tuning, roles.identification, scores, original, session.head.has_bias, options)
        refit = method.fit(inputs)
    kept = _keep_unfitted_rows(refit, original, roles.tuning.labels) if method.refits else []
    if refit.kept_original:
        logger.warning(
            "kept the original head: the re-fit is estimated worse (%s); --force-write writes the re-fit anyway",
            refit.details.get("summary", options.method),
        )
    provenance = _provenance(options, refit, kept, digests)
    with _timed(timings, "rewrite"):
        written = session.write(outputs["--out"], refit.W, refit.b, provenance, data=sources.real)
    run_facts = _RunFacts(session, method, options, given, sources, roles, scores, original, refit, kept, timings)
    result = _tune_result(str(model), outputs["--out"], run_facts, written, provenance["data_sha256"])
    _write_reports(result, outputs)
    return result


@dataclass
class _Given:
    """What the caller passed: held-out data (or activations), a separate tuning set, an evaluation set."""

    heldout: DataLike | Activations
    tuning: DataLike | Activations | None
    evaluation: DataLike | Activations | None

    @property
    def all(self) -> tuple:
        return (self.heldout, self.tuning, self.evaluation)


@dataclass
class _Roles:
    """The activations of a run by role; identification and tuning are views of ``heldout`` when split."""

    heldout: Activations
    identification: Activations
    tuning: Activations
    evaluation: Activations | None
    separate_tuning: bool


@dataclass
class _RunFacts:
    """What a ``tune`` run decided and computed, for its result and report."""

    session: Session
    method: Method
    options: TuneOptions
    given: _Given
    sources: _Sources
    roles: _Roles
    scores: NeuronScores | None
    original: tuple[np.ndarray, np.ndarray]
    refit: Refit
    kept: list[int]
    timings: dict[str, float]


def _checked_outputs(session: Session, given: _Given, out, report, report_html, plot, force: bool) -> dict[str, Path]:
    """Every path the run writes, checked before any work; matplotlib too when a figure is asked for."""
    if report_html is not None or plot is not None:
        from ntonnx.report.figures import require_matplotlib

        require_matplotlib()  # before the model runs, not after
    return check_tune_outputs(session, out, report, *given.all, force=force, report_html=report_html, plot=plot)


def _check_class_orders(session: Session, sources: _Sources, roles: _Roles, given: _Given) -> None:
    """Refuse labels whose class order disagrees with the model's predictions (before any re-fit)."""
    checked = [(roles.heldout, given.heldout)] + ([(roles.tuning, given.tuning)] if roles.separate_tuning else [])
    for acts, source in checked:
        check_class_mapping(
            acts.labels,
            predict(acts.logits),
            n_label_classes(session.head.n_classes),
            source=_describe(source),
            class_names=getattr(sources.heldout, "class_names", None),
            model_class_names=session.model_class_names,
        )


def _provenance(options: TuneOptions, refit: Refit, kept: list[int], digests: dict) -> dict:
    """What the written model's ``metadata_props`` record."""
    return {
        "version": __version__,
        "method": options.method,
        "options": options.to_dict(),
        "suppressed_neurons": [int(i) for i in refit.suppressed],
        **({"selected": refit.selected} if refit.selected else {}),
        **({"kept_classes": kept} if kept else {}),
        "data_sha256": {path: digest.result() for path, digest in digests.items()},
    }


def _tune_result(model: str, out: Path, run: _RunFacts, written, data_sha256: dict) -> TuneResult:
    """The result and its report fields, measured on the evaluation data (else the held-out data)."""
    roles, refit, scores, session = run.roles, run.refit, run.scores, run.session
    evaluated = roles.evaluation or roles.heldout
    before = predict(evaluated.logits)
    after = _predictions(evaluated.embeddings, refit.W, refit.b)
    evaluated_source = run.sources.evaluation if run.sources.evaluation is not None else run.sources.heldout
    suppressed = [int(i) for i in refit.suppressed]
    fields = report_fields(
        labels=evaluated.labels,
        before=before,
        after=after,
        n_classes=n_label_classes(session.head.n_classes),
        class_names=getattr(run.sources.heldout, "class_names", None),
        group_names=getattr(evaluated_source, "group_names", None),
        model_class_names=session.model_class_names,
        delta=None if scores is None else scores.delta,
        n_wrong=None if scores is None else scores.n_wrong,
        n_right=None if scores is None else scores.n_right,
        suppressed=suppressed,
        rule=run.options.rule,
        threshold=run.options.threshold,
        original=run.original if run.method.refits else None,
        tuned=(refit.W, refit.b) if run.method.refits else None,
        candidates=refit.details.get("validation"),
        selected=refit.selected,
        kept_classes=run.kept,
        model_sha256=session.model_digest,
        data_sha256=data_sha256,
    )
    given = run.given
    return TuneResult(
        model=model,
        out=str(out),
        files=[str(f) for f in written.files],
        options=run.options,
        head=session.head,
        provider=roles.heldout.provider,
        n_identification=len(roles.identification) if run.method.needs_identification else 0,
        n_tuning=len(roles.tuning),
        suppressed=suppressed,
        unscored_classes=[] if scores is None else [int(c) for c in scores.unscored_classes],
        evaluated_on=_describe(given.evaluation if given.evaluation is not None else given.heldout),
        before=compute_metrics(before, evaluated.labels, evaluated.groups),
        after=compute_metrics(after, evaluated.labels, evaluated.groups),
        converged=refit.converged,
        verification=written.verification,
        timings=run.timings,
        classes=_names(run.sources.heldout, "class_names"),
        groups=_names(run.sources.heldout, "group_names"),
        selected=refit.selected,
        kept_original=refit.kept_original,
        method_details=refit.details,
        report=fields,
    )


def _write_reports(result: TuneResult, outputs: dict[str, Path | None]) -> None:
    """The JSON report, the HTML page and the figure, for those asked for (paths already checked)."""
    if outputs.get("--report") is not None:
        write_report(outputs["--report"], result)
    if outputs.get("--report-html") is None and outputs.get("--plot") is None:
        return
    from ntonnx.report import main_figure, save_figure, write_html

    payload = json.loads(json.dumps(result.to_dict()))  # drawn as a saved report would be
    if outputs.get("--report-html") is not None:
        write_html(payload, outputs["--report-html"])
    if outputs.get("--plot") is not None:
        save_figure(main_figure(payload), outputs["--plot"])


def check_tune_outputs(
    session: Session,
    out: PathLike,
    report: PathLike | None,
    *data: DataLike | Activations | None,
    force: bool = False,
    report_html: PathLike | None = None,
    plot: PathLike | None = None,
) -> dict[str, Path]:
    """The checked paths a ``tune`` run writes: ``--out``, its ``.data`` file if any, the reports.

    The output keeps the input's layout, so a model with external data gets ``<out>.data``; an
    existing one is replaced only with ``force``, like ``out`` itself.
    """
    outputs = {"--out": out, "--report": report, "--report-html": report_html, "--plot": plot}
    if session.loaded.writes_data_file:
        outputs["--out (its external data)"] = Path(str(out) + ".data")
    return check_output_paths(outputs, inputs=_inputs(session, *data), force=force)


def write_report(path: PathLike, result: TuneResult) -> None:
    """Write ``result``'s JSON report atomically, so a pipeline never reads half of it."""
    text = json.dumps(result.to_dict(), indent=2)
    write_atomic(path, lambda tmp: tmp.write_text(text), option="--report")


@dataclass
class _Sources:
    """The opened data of a ``tune`` run: held-out (both roles unless ``tuning``), tuning, evaluation."""

    heldout: Dataset | Activations
    tuning: Dataset | Activations | None
    evaluation: Dataset | Activations | None
    real: Dataset | None  # the first set given as data: verification falls back to its first rows

    def tuning_source(self, given: _Given) -> tuple[Dataset | Activations, str]:
        """The set the head is re-fit on (the separate tuning set, else the held-out set) and its name."""
        if self.tuning is not None:
            return self.tuning, _describe(given.tuning)
        return self.heldout, _describe(given.heldout)


def _open_sources(session: Session, given: _Given) -> _Sources:
    """Open every data set of a run; the held-out set's class names fix the mapping for the others."""
    heldout = session.open_data(given.heldout)
    classes = getattr(heldout, "class_names", None)
    tuning = session.open_data(given.tuning, classes=classes) if given.tuning is not None else None
    evaluation = session.open_data(given.evaluation, classes=classes) if given.evaluation is not None else None
    # real rows from whichever data set was given as data (activations alone leave a synthetic batch)
    real = next((d for d in (heldout, tuning, evaluation) if isinstance(d, Dataset)), None)
    return _Sources(heldout, tuning, evaluation, real)


def _extract_roles(
    session: Session,
    sources: _Sources,
    options: TuneOptions,
    progress: ProgressFactory | None,
    *,
    split_heldout: bool = True,
) -> _Roles:
    """Held-out, identification, tuning and evaluation activations.

    With one data set, a seeded class-stratified split gives both roles; extracted with the
    identification samples first, the two parts are views of one array, not copies. Without
    ``split_heldout`` (methods that cross-fit internally) the whole held-out set is the tuning set.
    """
    split = None
    if sources.tuning is None and split_heldout:
        split = split_roles(sources.heldout.labels, options.split, options.seed, _describe(sources.heldout))
    in_order = split is not None and isinstance(sources.heldout, Dataset)
    heldout = session.activations(sources.heldout, progress, np.concatenate(split) if in_order else None)
    tuning = session.activations(sources.tuning, progress) if sources.tuning is not None else None
    evaluation = session.activations(sources.evaluation, progress) if sources.evaluation is not None else None
    separate = tuning is not None
    if split is None:
        return _Roles(heldout, heldout, tuning if separate else heldout, evaluation, separate)
    if in_order:
        cut = len(split[0])
        return _Roles(heldout, heldout.subset(slice(0, cut)), heldout.subset(slice(cut, None)), evaluation, separate)
    return _Roles(heldout, heldout.subset(split[0]), heldout.subset(split[1]), evaluation, separate)


def _keep_unfitted_rows(refit: Refit, original: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> list[int]:
    """Put back the original rows of the classes the tuning data has no sample of; return those classes.

    The solver already keeps them fixed; this makes the guarantee the pipeline's, whatever a
    method does to the rows it fits (``auto``'s ``direction`` family projects every row).
    """
    W0, b0 = original
    kept = np.setdiff1d(np.arange(W0.shape[0]), fitted_rows(labels, W0.shape[0]))
    if kept.size:
        refit.W[kept], refit.b[kept] = W0[kept], b0[kept]
    return [int(c) for c in kept]


def _scores(identification: Activations, n_logits: int) -> NeuronScores:
    """NeuronTune's scores from the original model's own mistakes on the identification set."""
    predictions = predict(identification.logits)
    return identify(identification.embeddings, identification.labels, predictions, n_label_classes(n_logits))


def _predictions(embeddings: np.ndarray, W: np.ndarray, b: np.ndarray, rows: int = 4096) -> np.ndarray:
    """What the head ``(W, b)`` predicts, in float64 a block of rows at a time (no float64 copy of all)."""
    blocks = [predict(embeddings[i : i + rows] @ W.T + b) for i in range(0, len(embeddings), rows)]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def _inputs(session: Session, *data) -> list[Path]:
    """Every file a run reads: the model and its external data, the data given, tokenizer and preprocessing files."""
    options = session.data_options
    files = [session.loaded.path, *map(Path, session.loaded.external_files)]
    return files + _paths(*data, options.tokenizer, options.preprocess_file)


def _paths(*given) -> list[Path]:
    """The file paths among ``given`` (data may also be opened objects, or absent)."""
    return [Path(g) for g in given if isinstance(g, str | os.PathLike)]


def _names(source, attribute: str) -> dict[str, int] | None:
    """Name -> index of a data set's classes or groups, when they were given as names."""
    names = getattr(source, attribute, None)
    return None if names is None else {name: i for i, name in enumerate(names)}


#: Imported on a thread while the model runs: SciPy's optimizer alone takes ~0.5 s to import.
_SOLVER_MODULES = ("scipy.optimize", "threadpoolctl", "ntonnx.method.solve")


def _import_in_background(modules: tuple[str, ...]) -> None:
    """Import ``modules`` on a daemon thread; onnxruntime releases the GIL while it runs the model.

    A later ``import`` of one of them in the main thread waits for this one to finish (Python's
    per-module import lock), so nothing is imported twice or seen half-initialised.
    """

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:  # the real import, where it is needed, reports it
                return

    threading.Thread(target=load, name="ntonnx-imports", daemon=True).start()


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
