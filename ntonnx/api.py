"""The public entry points: inspect, extract, evaluate and tune an ONNX classifier.

Each function takes file paths (or already loaded objects), runs the one-way pipeline
load -> locate head -> extract -> identify -> solve -> rewrite -> verify, and returns a result
dataclass with a ``to_dict()`` for JSON. The CLI is a thin layer over these.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ntonnx import __version__
from ntonnx.data import Dataset, HeldOutData, InputSpec
from ntonnx.errors import DataError, ModelError, UsageError
from ntonnx.heads import HeadSpec, locate_head, read_head
from ntonnx.heads.scores import locate_head_or_scores
from ntonnx.methods import TuneOptions, identify_spurious, refit_head
from ntonnx.metrics import Metrics, compute_metrics, predict
from ntonnx.model_io import LoadedModel, check_output_path, load_model, save_model_atomic
from ntonnx.rewrite import Verification, tuned_model, verify_written
from ntonnx.runtime import (
    Activations,
    ModelRunner,
    extract_activations,
    file_digest,
    is_activations,
    resolve_providers,
)
from ntonnx.selection import SelectedFit
from ntonnx.sources import DataOptions, open_dataset, source_digest
from ntonnx.splits import stratified_split

logger = logging.getLogger("ntonnx")

PathLike = str | os.PathLike
#: What ``data``/``tune_data``/``eval_data`` accept: a path (any format :mod:`ntonnx.sources`
#: reads) or an opened data set.
DataLike = PathLike | Dataset
#: ``progress(description, total)`` returns a callback taking the number of samples just done.
ProgressFactory = Callable[[str, int], Callable[[int], None]]
_VERIFY_SAMPLES = 64


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
    """Accuracies of a model on a labelled data set."""

    model: str
    data: str
    provider: str
    head: HeadSpec
    metrics: Metrics
    classes: dict[str, int] | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "data": self.data,
            "provider": self.provider,
            "head": self.head.to_dict(),
            "classes": self.classes,
            "metrics": self.metrics.to_dict(),
        }


@dataclass
class TuneResult:
    """Everything a ``tune`` run did, measured and wrote; ``to_dict()`` is the JSON report."""

    model: str
    output: str
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
    #: the re-fit ``--method auto`` chose (see :mod:`ntonnx.selection`)
    selected: str | None = None

    def to_dict(self) -> dict:
        return {
            "ntonnx_version": __version__,
            "model": self.model,
            "output": self.output,
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
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "converged": self.converged,
            "selected": self.selected,
            "verification": self.verification.to_dict(),
            "timings_s": self.timings,
        }


def inspect_model(
    model: PathLike, *, output: str | None = None, head_node: str | None = None, embedding: str | None = None
) -> ModelInfo:
    """Describe ``model``'s inputs, outputs and head; never runs it.

    A graph without a recognisable head is described all the same (``head`` None, ``head_error``
    saying why); a bad option (``head_node`` naming no node, ...) raises :class:`UsageError`.
    """
    loaded = load_model(model)
    proto = loaded.proto
    head, error = None, None
    try:
        head = locate_head(proto, output=output, head_node=head_node, embedding=embedding)
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
        head=head,
        head_error=error,
    )


def extract(
    model: PathLike,
    data: DataLike,
    *,
    data_options: DataOptions | None = None,
    batch_size: int = 64,
    provider: str | None = None,
    output: str | None = None,
    head_node: str | None = None,
    embedding: str | None = None,
    progress: ProgressFactory | None = None,
    save_to: PathLike | None = None,
) -> Activations:
    """Run ``model`` once over ``data``; return embeddings, logits, labels (and groups).

    ``data`` is any source :func:`ntonnx.sources.open_dataset` reads (``data_options`` says
    how), or an opened :class:`~ntonnx.data.Dataset`; it is streamed, never held whole.
    ``save_to`` also writes the activations (atomically) for ``tune --activations``; it may not
    name the model or the data file.
    """
    if save_to is not None:
        inputs = [Path(model)] + ([Path(data)] if isinstance(data, str | os.PathLike) else [])
        if any(Path(save_to).resolve() == p.resolve() for p in inputs if p.exists()):
            raise UsageError(f"-o '{save_to}' is an input file; choose another path")
    session = _Session.open(model, provider, output, head_node, embedding, batch_size, data_options)
    acts = session.activations(session.source(data), progress)
    if save_to is not None:
        acts.save(save_to)
    return acts


def evaluate(
    model: PathLike,
    data: DataLike,
    *,
    data_options: DataOptions | None = None,
    batch_size: int = 64,
    provider: str | None = None,
    output: str | None = None,
    head_node: str | None = None,
    embedding: str | None = None,
    progress: ProgressFactory | None = None,
) -> EvaluationResult:
    """Accuracy, per-class and (with groups) per-group accuracy of ``model`` on ``data``.

    Needs no head: without one, the chosen output's scores are evaluated (:mod:`ntonnx.heads.scores`).
    """
    session = _Session.open(
        model, provider, output, head_node, embedding, batch_size, data_options, locate_head_or_scores
    )
    acts = session.activations(session.source(data), progress)
    return EvaluationResult(
        model=str(model),
        data=_describe(data),
        provider=acts.provider,
        head=session.head,
        metrics=compute_metrics(predict(acts.logits), acts.labels, acts.groups),
        classes=session.class_mapping,
    )


def tune(
    model: PathLike,
    output_path: PathLike,
    *,
    data: DataLike | None = None,
    activations: PathLike | Activations | None = None,
    tune_data: DataLike | Activations | None = None,
    eval_data: DataLike | Activations | None = None,
    data_options: DataOptions | None = None,
    options: TuneOptions | None = None,
    batch_size: int = 64,
    provider: str | None = None,
    output: str | None = None,
    head_node: str | None = None,
    embedding: str | None = None,
    force: bool = False,
    progress: ProgressFactory | None = None,
) -> TuneResult:
    """Re-solve ``model``'s head and write the result to ``output_path``.

    Parameters
    ----------
    data : labelled held-out data (any format :func:`ntonnx.sources.open_dataset` reads, or a
        :class:`~ntonnx.data.Dataset`); the identification set, and also the tuning set (split
        by class, seeded) when ``tune_data`` is not given.
    activations : embeddings saved by :func:`extract`, instead of ``data``.
    tune_data : a separate tuning set (data or activations file).
    eval_data : data for the before/after table (default: the held-out data itself).
    data_options : how to read data that is not model-ready arrays (format, columns, image
        preprocessing, tokenizer); applies to ``data``, ``tune_data`` and ``eval_data``, and
        class names map to the same indices in all three.
    options : the method and its settings (default: the paper's NeuronTune).
    force : replace ``output_path`` if it exists (never the input model).
    """
    options = options or TuneOptions()
    if (data is None) == (activations is None):
        raise UsageError("give exactly one of --data or --activations")
    timings: dict[str, float] = {}
    session = _Session.open(model, provider, output, head_node, embedding, batch_size, data_options)
    session.record_digests = True
    output_path = check_output_path(output_path, model, force)
    heldout_source = session.source(data if data is not None else activations)
    tuning_source = session.source(tune_data) if tune_data is not None else None
    evaluation_source = session.source(eval_data) if eval_data is not None else None
    if options.method == "dfr":
        _require_groups(tuning_source or heldout_source, tune_data if tune_data is not None else data)
    if options.method != "erm":
        _require_every_class(
            tuning_source or heldout_source,
            tune_data if tune_data is not None else (data if data is not None else activations),
            max(session.head.n_classes, 2),
        )
    split = None if tuning_source is not None else stratified_split(heldout_source.labels, options.split, options.seed)
    # Extracted with the identification samples first, the two parts of a split are views, not copies.
    order = np.concatenate(split) if split is not None and isinstance(heldout_source, Dataset) else None
    verify_sample = session.verification_sample(heldout_source if isinstance(heldout_source, Dataset) else None)
    with _timed(timings, "extraction"):
        heldout = session.activations(heldout_source, progress, order)
        tuning = session.activations(tuning_source, progress) if tuning_source is not None else None
        evaluation = session.activations(evaluation_source, progress) if evaluation_source is not None else None
    # Only activations are needed from here on: a data set read whole (an .npz) is freed before the solve.
    del heldout_source, tuning_source, evaluation_source
    if split is None:
        identification = heldout
    elif order is not None:
        cut = len(split[0])
        identification, tuning = heldout.subset(slice(0, cut)), heldout.subset(slice(cut, None))
    else:
        identification, tuning = heldout.subset(split[0]), heldout.subset(split[1])
    original = read_head(session.loaded.proto, session.head)
    scores, suppressed = None, np.array([], dtype=np.int64)
    with _timed(timings, "identification"):
        if options.needs_identification:
            scores, suppressed = identify_spurious(identification, session.head.n_classes, options)
    with _timed(timings, "solve"):
        fit = refit_head(
            options,
            tuning,
            original,
            suppressed=suppressed,
            fit_intercept=session.head.has_bias,
            identification=identification,
            scores=scores,
        )
    selected = fit.candidate if isinstance(fit, SelectedFit) else None
    W, b = (fit.W, fit.b) if fit is not None else original
    provenance = {
        "version": __version__,
        "method": options.method,
        "options": options.to_dict(),
        "suppressed_neurons": [int(i) for i in suppressed],
        **({"selected": selected} if selected else {}),
        "data_sha256": session.digests,
    }
    with _timed(timings, "rewrite"):
        files, verification = session.write(output_path, W, b, provenance, verify_sample)
    evaluated = evaluation or heldout
    return TuneResult(
        model=str(model),
        output=str(output_path),
        files=[str(f) for f in files],
        options=options,
        head=session.head,
        provider=heldout.provider,
        n_identification=len(identification) if options.needs_identification else 0,
        n_tuning=len(tuning),
        suppressed=[int(i) for i in suppressed],
        unscored_classes=[] if scores is None else [int(c) for c in scores.unscored_classes],
        evaluated_on=_describe(eval_data if eval_data is not None else (data if data is not None else activations)),
        before=compute_metrics(predict(evaluated.logits), evaluated.labels, evaluated.groups),
        after=compute_metrics(_predictions(evaluated.embeddings, W, b), evaluated.labels, evaluated.groups),
        converged=None if fit is None else fit.converged,
        verification=verification,
        timings=timings,
        classes=session.class_mapping,
        selected=selected,
    )


class _Session:
    """One model being worked on: loaded once, head located once, one onnxruntime session."""

    def __init__(
        self,
        loaded: LoadedModel,
        head: HeadSpec,
        provider: str | None,
        batch_size: int,
        data_options: DataOptions | None = None,
    ):
        if batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
        self.loaded = loaded
        self.head = head
        self.batch_size = batch_size
        self._provider = provider
        self._runner: ModelRunner | None = None
        self.model_digest = file_digest(loaded.path)
        #: Whether :meth:`source` hashes data files for :attr:`digests` (only ``tune`` records them).
        self.record_digests = False
        self._digests: dict[str, _Digest] = {}
        self.data_options = data_options or DataOptions()
        self.class_names: list[str] | None = None

    @classmethod
    def open(
        cls, model, provider, output, head_node, embedding, batch_size, data_options=None, locate=locate_head
    ) -> _Session:
        loaded = load_model(model)
        head = locate(loaded.proto, output=output, head_node=head_node, embedding=embedding)
        return cls(loaded, head, provider, batch_size, data_options)

    @property
    def runner(self) -> ModelRunner:
        """The onnxruntime session, created on first use (tuning from activations needs none)."""
        if self._runner is None:
            providers = resolve_providers(self._provider)
            self._runner = ModelRunner(
                self.loaded.proto, [self.head.embedding, self.head.logits], providers, str(self.loaded.path)
            )
        return self._runner

    @property
    def digests(self) -> dict[str, str]:
        """sha256 of every data file opened, waiting for any still being computed."""
        return {path: digest.result() for path, digest in self._digests.items()}

    @property
    def input_specs(self) -> list[InputSpec]:
        return self.runner.inputs

    @property
    def class_mapping(self) -> dict[str, int] | None:
        """Class name -> index, when labels were given as names (for the report)."""
        return None if self.class_names is None else {name: i for i, name in enumerate(self.class_names)}

    def source(self, source) -> Dataset | Activations:
        """Open ``source``: a data set (labels read, inputs streamed later) or saved activations.

        The first data set whose labels are class names fixes the name -> index mapping; the
        later ones map through it, so every set agrees on what index 2 means.
        """
        if isinstance(source, Activations):
            return self._checked(source, "activations")
        if isinstance(source, Dataset):
            dataset = source
        elif _is_activations_file(source, self.data_options):
            self._record_digest(source)
            return self._checked(Activations.load(source), str(source))
        else:
            options = self.data_options
            if self.class_names is not None and options.classes is None:
                options = options.with_classes(self.class_names)
            self._record_digest(source)
            dataset = open_dataset(source, self.input_specs, self.head.n_classes, options)
        if dataset.class_names is not None and self.class_names is None:
            self.class_names = list(dataset.class_names)
        return dataset

    def _record_digest(self, path: PathLike) -> None:
        """Start hashing a data file in the background, so that it overlaps reading and extraction."""
        if self.record_digests and str(path) not in self._digests:
            self._digests[str(path)] = _Digest(path)

    def activations(
        self, source: Dataset | Activations, progress: ProgressFactory | None, order: np.ndarray | None = None
    ) -> Activations:
        """Activations of an opened ``source``: run the model over a data set, or pass them on.

        ``order`` (data sets only) puts sample ``order[j]`` in row ``j``.
        """
        if isinstance(source, Activations):
            return source
        update = progress(f"extract {Path(source.source).name}", len(source)) if progress else None
        return extract_activations(
            self.runner,
            self.head,
            source,
            model_digest=self.model_digest,
            batch_size=self.batch_size,
            progress=update,
            order=order,
        )

    def _checked(self, acts: Activations, source: str) -> Activations:
        if acts.embeddings.shape[1] != self.head.dim:
            raise DataError(
                f"activations '{source}' have {acts.embeddings.shape[1]} embedding dims, the head takes {self.head.dim}"
            )
        if acts.model_digest != self.model_digest:
            logger.warning("activations '%s' were extracted from a different model file", source)
        return acts

    def verification_sample(self, data: Dataset | None) -> HeldOutData:
        """Real inputs when we have them (the first samples), else a synthetic batch like the model's inputs."""
        if data is not None:
            return data.head(_VERIFY_SAMPLES)
        return synthetic_sample(self.input_specs, n=8)

    def write(self, output_path: Path, W, b, provenance, sample: HeldOutData) -> tuple[list[Path], Verification]:
        """Write the tuned model atomically, verifying it before it reaches ``output_path``."""
        model = tuned_model(self.loaded.proto, self.head, W, b, provenance)
        outcome: list[Verification] = []

        def check(path: Path) -> None:
            outcome.append(
                verify_written(
                    path, self.head, W, b, sample, resolve_providers(self._provider), original=self.loaded.proto
                )
            )

        files = save_model_atomic(
            model,
            output_path,
            external_data=bool(self.loaded.external_files),
            protected=self.loaded.protected_paths,
            check=check,
        )
        return files, outcome[0]


class _Digest:
    """The sha256 of a data file, computed on a daemon thread (hashlib and file reads release the GIL).

    Hashing a 2 GB file takes over a second; started when the file is opened, it runs while the
    data are read and the model runs, and only ``tune``'s provenance waits for it.
    """

    def __init__(self, path: PathLike):
        self.path = path
        self._value: str | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="ntonnx-digest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = source_digest(self.path)
        except OSError as exc:
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise DataError(f"data '{self.path}' could not be read for its sha256 ({self._error})")
        return self._value


def _predictions(embeddings: np.ndarray, W: np.ndarray, b: np.ndarray, rows: int = 4096) -> np.ndarray:
    """What the head ``(W, b)`` predicts, in float64 a block of rows at a time (no float64 copy of all)."""
    blocks = [predict(embeddings[i : i + rows] @ W.T + b) for i in range(0, len(embeddings), rows)]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def synthetic_sample(specs: list[InputSpec], n: int) -> HeldOutData:
    """A seeded batch of standard-normal floats (zeros for integer inputs) matching ``specs``."""
    rng = np.random.default_rng(0)
    inputs = {}
    for spec in specs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        if shape and not isinstance(spec.shape[0], int):
            shape[0] = n
        if spec.dtype.kind == "f":
            inputs[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=spec.dtype)
    count = len(next(iter(inputs.values())))
    return HeldOutData(inputs=inputs, labels=np.zeros(count, dtype=np.int64), groups=None, source="synthetic")


def _require_groups(source: Dataset | Activations, given) -> None:
    if source.groups is None:
        where = (
            "group column" if isinstance(source, Dataset) and not isinstance(source, HeldOutData) else "'groups' array"
        )
        raise UsageError(f"--method dfr needs group labels: data '{_describe(given)}' has no {where}")


def _require_every_class(source: Dataset | Activations, given, n_classes: int) -> None:
    """Fail before the model runs if the data the head is re-fit on lacks a class."""
    missing = np.setdiff1d(np.arange(n_classes), source.labels)
    if missing.size:
        raise DataError(
            f"data '{_describe(given)}' has no samples of class(es) {missing.tolist()}; re-fitting the head "
            "needs samples of every class the model predicts"
        )


def _is_activations_file(path: PathLike, options: DataOptions) -> bool:
    """True for an ``.npz`` written by :meth:`Activations.save` (only its member names are read)."""
    path = Path(path)
    if options.format not in (None, "npz") or path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            return is_activations(archive)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError, TypeError):
        return False  # not an archive of named arrays: the data reader says what is wrong with it


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
