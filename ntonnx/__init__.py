"""ntonnx: remove spurious bias from exported ONNX classifiers with NeuronTune.

The public API works on files: :func:`inspect_model`, :func:`extract`, :func:`evaluate` and
:func:`tune`. The numerical steps are usable on their own arrays: :func:`identify`
(``ntonnx.neurons``) and :func:`fit_head` (``ntonnx.solve``). Held-out data may be arrays,
image folders or manifests, tables or text (:class:`DataOptions`, :func:`open_dataset`).
"""

__version__ = "0.1.0"

from ntonnx.api import (
    EvaluationResult,
    ModelInfo,
    TuneResult,
    evaluate,
    extract,
    inspect_model,
    tune,
)
from ntonnx.data import Dataset, HeldOutData
from ntonnx.errors import (
    DataError,
    MissingDependencyError,
    ModelError,
    NtonnxError,
    UsageError,
    VerificationError,
)
from ntonnx.heads import HeadSpec
from ntonnx.methods import METHODS, TuneOptions
from ntonnx.metrics import Metrics
from ntonnx.neurons import NeuronScores, select_spurious, spuriousness_scores
from ntonnx.preprocess import ImagePreprocess
from ntonnx.runtime import Activations
from ntonnx.solve import ConvergenceWarning, HeadFit, fit_head
from ntonnx.sources import DataOptions, open_dataset

__all__ = [
    "METHODS",
    "Activations",
    "ConvergenceWarning",
    "DataError",
    "DataOptions",
    "Dataset",
    "EvaluationResult",
    "HeadFit",
    "HeadSpec",
    "HeldOutData",
    "ImagePreprocess",
    "Metrics",
    "MissingDependencyError",
    "ModelError",
    "ModelInfo",
    "NeuronScores",
    "NtonnxError",
    "TuneOptions",
    "TuneResult",
    "UsageError",
    "VerificationError",
    "__version__",
    "evaluate",
    "extract",
    "fit_head",
    "inspect_model",
    "open_dataset",
    "select_spurious",
    "spuriousness_scores",
    "tune",
]
