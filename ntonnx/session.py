"""A model being worked on: loaded once, its head located once, one onnxruntime session, data opened against it.

:class:`Session` is the public building block under :mod:`ntonnx.api`: the entry points are a few
named steps over one. Use it directly to run several data sets through one model without
re-loading it, or to write a head you solved yourself::

    session = Session("model.onnx")
    acts = session.activations(session.open_data("heldout.npz"))
    written = session.write("tuned.onnx", W, b, provenance={}, sample=session.verification_sample(None))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ntonnx.activations import Activations, is_activations
from ntonnx.data import ArrayDataset, DataOptions, Dataset, InputSpec, open_dataset
from ntonnx.errors import DataError
from ntonnx.files import npz_members, sha256_file
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
        opening the next, so that every set agrees on what index 2 means.
        """
        if isinstance(source, Activations):
            return self._checked(source, "activations")
        if isinstance(source, Dataset):
            return source
        if self.data_options.format in (None, "npz") and is_activations(npz_members(source) or ()):
            return self._checked(Activations.load(source), str(source))
        options = self.data_options
        if classes is not None and options.classes is None:
            options = options.with_classes(classes)
        return open_dataset(source, self.input_specs, self.head.n_classes, options)

    def activations(
        self, source: Dataset | Activations, progress: ProgressFactory | None = None, order: np.ndarray | None = None
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
            batch_size=self.run.batch_size,
            progress=update,
            order=order,
            head_weights=read_head(self.loaded.proto, self.head) if self.head.logits_computed else None,
        )

    def verification_sample(self, data: Dataset | None) -> ArrayDataset:
        """Real inputs when we have them (the first samples), else a synthetic batch like the model's inputs."""
        if data is not None:
            return data.first(VERIFY_SAMPLES)
        return synthetic_sample(self.input_specs, n=8)

    def write(self, out: PathLike, W: np.ndarray, b: np.ndarray, provenance: dict, sample: ArrayDataset) -> Written:
        """Write the model with head ``(W, b)`` to ``out`` atomically, verified before it reaches ``out``."""
        model = tuned_model(self.loaded.proto, self.head, W, b, provenance)
        with staged_model(
            model, out, external_data=bool(self.loaded.external_files), protected=self.loaded.protected_paths
        ) as staged:
            providers = resolve_providers(self.run.provider)
            verification = verify_written(staged.path, self.head, W, b, sample, providers, original=self.loaded.proto)
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
    return ArrayDataset(inputs=inputs, labels=np.zeros(count, dtype=np.int64), groups=None, source="synthetic")
