"""A model being worked on: loaded once, its head located once, one onnxruntime session, data opened against it.

:class:`Session` is the public building block under :mod:`ntonnx.api`: the entry points are a few
named steps over one. Use it directly to run several data sets through one model without
re-loading it, or to write a head you solved yourself::

    session = Session("model.onnx")
    acts = session.activations(session.open_data("heldout.npz"))
    written = session.write("tuned.onnx", W, b, provenance={})
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ntonnx.activations import Activations, is_activations, is_activations_folder, n_label_classes
from ntonnx.data import ArrayDataset, DataOptions, Dataset, InputSpec, open_dataset
from ntonnx.data.dataset import dims
from ntonnx.errors import DataError, ModelError
from ntonnx.files import npz_members, sha256_file
from ntonnx.graph.class_names import graph_class_names
from ntonnx.graph.heads import HeadSpec, locate_head, read_head
from ntonnx.graph.model_io import LoadedModel, load_model, staged_model
from ntonnx.graph.options import HeadQuery, RunOptions
from ntonnx.graph.rewrite import tuned_model
from ntonnx.graph.runtime import ModelRunner, extract_activations, resolve_providers
from ntonnx.graph.verify import Verification, verify_written

logger = logging.getLogger("ntonnx")

PathLike = str | os.PathLike
#: ``progress(description, total)`` returns a callback taking the number of samples just done.
ProgressFactory = Callable[[str, int], Callable[[int], None]]
#: Real samples the written model is verified on (the first ones of the held-out data).
VERIFY_SAMPLES = 64
#: The most bytes a synthetic verification sample may take (see :func:`synthetic_sample`).
SYNTHETIC_SAMPLE_BYTES = 64 << 20


@dataclass
class Written:
    """A tuned model in place at its output path, and the proof that it computes the new head.

    Attributes
    ----------
    files : the files written (the model, and its external-data file if it has one).
    verification : what was checked on the staged file before it was renamed into place.
    """

    files: list[Path]
    verification: Verification


class Session:
    """One model being worked on.

    Parameters
    ----------
    model : path of the ``.onnx`` file (its external data, if any, beside it).
    head : overrides of head detection.
    run : how onnxruntime runs the model.
    data_options : how :meth:`open_data` reads data that is not model-ready arrays.
    locate : how the head is found: :func:`~ntonnx.graph.heads.locate_head`, or
        :func:`~ntonnx.graph.heads.locate_head_or_scores` where the output's scores will do (evaluate).
    """

    def __init__(
        self,
        model: PathLike,
        *,
        head: HeadQuery | None = None,
        run: RunOptions | None = None,
        data_options: DataOptions | None = None,
        locate: Callable[..., HeadSpec] = locate_head,
    ):
        self.loaded: LoadedModel = load_model(model)
        self.head: HeadSpec = locate(self.loaded.proto, **asdict(head or HeadQuery()))
        self.run = run or RunOptions()
        self.data_options = data_options or DataOptions()
        self.model_digest = sha256_file(self.loaded.path)
        self._runner: ModelRunner | None = None
        # The embedding tensor's values for the first samples of the first data set run (or loaded
        # activations), as the graph computes them: what the head-scope verification feeds the head.
        self._head_inputs: np.ndarray | None = None
        # How to open each data set again from its path (Ray workers open their own copy).
        self._openers: dict[int, Callable[[], Dataset]] = {}
        #: The class names the graph carries (ZipMap labels, metadata), or None.
        self.model_class_names = graph_class_names(self.loaded.proto, n_label_classes(self.head.n_classes))

    @property
    def runner(self) -> ModelRunner:
        """The onnxruntime session, created on first use (tuning from saved activations needs none)."""
        if self._runner is None:
            providers = resolve_providers(self.run.provider)
            self._runner = ModelRunner(
                self.loaded.proto, [self.head.embedding, self.head.logits], providers, str(self.loaded.path)
            )
        return self._runner

    @property
    def input_specs(self) -> list[InputSpec]:
        return self.runner.inputs

    def open_data(
        self, source: PathLike | Dataset | Activations, *, classes: Sequence[str] | None = None
    ) -> Dataset | Activations:
        """Open ``source``: a data set (labels read now, inputs streamed later) or saved activations.

        ``classes`` (class names in model order) maps labels given as names, unless the data
        options name the classes themselves: pass the first data set's ``class_names`` when
        opening the next, so that every set agrees on what index 2 means. Without either, names
        the model's own class names cover map in the model's order (the one its outputs follow),
        else in sorted order.
        """
        if isinstance(source, Activations):
            return self._checked(source, "activations")
        if isinstance(source, Dataset):
            return source
        if self.data_options.format in (None, "npz") and is_activations(npz_members(source) or ()):
            return self._checked(Activations.load(source), str(source))
        if self.data_options.format in (None, "npy") and is_activations_folder(source):
            return self._checked(Activations.load(source), str(source))
        options = self.data_options
        if classes is not None and options.classes is None:
            options = options.with_classes(classes)
        dataset = open_dataset(source, self.input_specs, self.head.n_classes, options)
        names, own = dataset.class_names, self.model_class_names
        if (
            options.classes is None
            and names is not None
            and own is not None
            and names != own
            and set(names) <= set(own)
        ):
            shown = ", ".join(own[:10]) + (", ..." if len(own) > 10 else "")
            logger.info("data '%s': class names mapped in the model's own order (%s)", source, shown)
            options = options.with_classes(own)
            dataset = open_dataset(source, self.input_specs, self.head.n_classes, options)
        if dataset.class_names is not None and options.classes is None:
            options = options.with_classes(dataset.class_names)
        self._openers[id(dataset)] = functools.partial(
            open_dataset, source, self.input_specs, self.head.n_classes, options
        )
        return dataset

    def activations(
        self,
        source: Dataset | Activations,
        progress: ProgressFactory | None = None,
        order: np.ndarray | None = None,
        *,
        folder: PathLike | None = None,
    ) -> Activations:
        """Activations of an opened ``source``: run the model over a data set, or pass them on.

        ``order`` (data sets only) puts sample ``order[j]`` in row ``j``. With the ``ray`` engine
        the activations are written to ``folder`` (default: a temporary one that lives as long as
        this session) and read back memory-mapped.
        """
        if isinstance(source, Activations):
            if self._head_inputs is None and self._embedding_is_2d():
                self._head_inputs = np.array(source.embeddings[:VERIFY_SAMPLES])  # the tensor itself: (N, dim)
            return source
        update = progress(f"extract {Path(source.source).name}", len(source)) if progress else None
        if self.run.engine == "ray":
            return self._on_ray(source, update, order, folder)
        keep = VERIFY_SAMPLES if self._head_inputs is None else 0
        acts = extract_activations(
            self.runner,
            self.head,
            source,
            model_digest=self.model_digest,
            batch_size=self.run.batch_size,
            progress=update,
            order=order,
            head_weights=read_head(self.loaded.proto, self.head) if self.head.logits_computed else None,
            keep_first=keep,
        )
        if keep:
            self._head_inputs = self.runner.first_rows.get(self.head.embedding)
        return acts

    def _embedding_is_2d(self) -> bool:
        """Whether the embedding tensor is the ``(N, dim)`` rows themselves (no pooling, no trailing dims)."""
        return self.head.pooling is None and self.head.pattern != "conv1x1"

    def _on_ray(
        self, source: Dataset, update: Callable[[int], None] | None, order: np.ndarray | None, folder: PathLike | None
    ) -> Activations:
        from ntonnx.graph.distributed import extract_on_ray

        if self.head.logits_computed:
            raise ModelError("--engine ray does not run heads whose logits are computed in NumPy; use --engine local")
        if folder is None:
            folder = tempfile.mkdtemp(prefix="ntonnx-activations-")
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        acts = extract_on_ray(
            self.loaded.path,
            self.head,
            source,
            self._openers.get(id(source)),
            folder,
            model_digest=self.model_digest,
            provider=self.run.provider,
            batch_size=self.run.batch_size,
            address=self.run.ray_address,
            workers=self.run.ray_workers,
            order=order,
            progress=update,
        )
        if self._head_inputs is None and self._embedding_is_2d():
            first = np.arange(min(VERIFY_SAMPLES, len(acts)))
            self._head_inputs = np.array(acts.embeddings[first if order is None else np.argsort(order)[first]])
        return acts

    def verification_sample(self, data: Dataset | None) -> ArrayDataset:
        """Real inputs when we have them (the first samples), else a synthetic batch like the model's inputs."""
        if data is not None:
            return data.first(VERIFY_SAMPLES)
        return synthetic_sample(self.input_specs, n=8)

    def write(
        self,
        out: PathLike,
        W: np.ndarray,
        b: np.ndarray,
        provenance: dict,
        sample: ArrayDataset | None = None,
        *,
        data: Dataset | None = None,
    ) -> Written:
        """Write the model with head ``(W, b)`` to ``out`` atomically, verified before it reaches ``out``.

        Verified (see :class:`~ntonnx.graph.options.RunOptions` ``verify``) on ``sample`` when given;
        else on the first samples of the first data set this session ran (the head scope reuses
        their embeddings, kept from that run), else on those of ``data``, else on synthetic inputs.
        """
        model = tuned_model(self.loaded.proto, self.head, W, b, provenance)
        head_inputs = self._head_inputs if sample is None and self.run.verify == "head" else None
        if head_inputs is None and sample is None:
            sample = self.verification_sample(data)
        if head_inputs is None and self.run.verify == "head":
            self.runner.run(sample, self.run.batch_size, keep_first=len(sample))
            head_inputs = self.runner.first_rows[self.head.embedding]
        with staged_model(
            model, out, external_data=bool(self.loaded.external_files), protected=self.loaded.protected_paths
        ) as staged:
            providers = resolve_providers(self.run.provider)
            verification = verify_written(
                staged.path,
                self.head,
                W,
                b,
                sample if sample is not None else lambda: self.verification_sample(data),
                providers,
                original=self.loaded.proto,
                scope=self.run.verify,
                head_inputs=head_inputs,
            )
        return Written(files=staged.files, verification=verification)

    def _checked(self, acts: Activations, source: str) -> Activations:
        if acts.embeddings.shape[1] != self.head.dim:
            raise DataError(
                f"activations '{source}' have {acts.embeddings.shape[1]} embedding dims, the head takes {self.head.dim}"
            )
        if acts.model_digest != self.model_digest:
            logger.warning("activations '%s' were extracted from a different model file", source)
        return acts


def synthetic_sample(specs: list[InputSpec], n: int) -> ArrayDataset:
    """A seeded batch of standard-normal floats (zeros for integer inputs) matching ``specs``.

    Used only when no data set gives real rows (tuning from saved activations). Its size comes
    from the model's declared dims, which a model file can set to anything: it holds at most
    :data:`SYNTHETIC_SAMPLE_BYTES` (fewer than ``n`` samples if need be), and a model whose single
    sample is larger is refused before anything is allocated.
    """
    rng = np.random.default_rng(0)

    def shape_of(spec: InputSpec, count: int) -> list[int]:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        if shape and not isinstance(spec.shape[0], int):
            shape[0] = count
        return shape

    def size(count: int) -> int:  # Python ints: a declared 1e10 cannot overflow
        return sum(math.prod(shape_of(spec, count)) * spec.dtype.itemsize for spec in specs)

    if size(1) > SYNTHETIC_SAMPLE_BYTES:
        raise ModelError(
            f"the model's inputs declare {', '.join(f'{s.name} {dims(s)}' for s in specs)}: one synthetic "
            f"verification sample would take {size(1):,} bytes (> {SYNTHETIC_SAMPLE_BYTES:,}); give --data "
            "so that real rows verify the written model"
        )
    while n > 1 and size(n) > SYNTHETIC_SAMPLE_BYTES:
        n //= 2
    inputs = {}
    for spec in specs:
        shape = shape_of(spec, n)
        if spec.dtype.kind == "f":
            inputs[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=spec.dtype)
    count = len(next(iter(inputs.values())))
    return ArrayDataset(inputs=inputs, labels=np.zeros(count, dtype=np.int64), groups=None, source="synthetic")
