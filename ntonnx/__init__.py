"""ntonnx: remove spurious bias from exported ONNX classifiers with NeuronTune.

The public API works on files: :func:`inspect_model`, :func:`extract`, :func:`evaluate` and
:func:`tune` (see :mod:`ntonnx.api`), and :class:`Session` for several steps over one model.
Settings come in option groups: :class:`HeadQuery` (which head), :class:`RunOptions` (how the
model runs), :class:`DataOptions` (how data is read) and :class:`TuneOptions` (the method). The
numerical steps work on arrays alone: :func:`spuriousness_scores` and :func:`select_spurious`
(NeuronTune's identification, :mod:`ntonnx.method.neurons`) and :func:`fit_head`
(:mod:`ntonnx.method.solve`). ARCHITECTURE.md maps the package.
"""

from __future__ import annotations

import importlib

from ntonnx._version import __version__

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``import ntonnx.data.options`` (as the CLI does to build its options) does not load onnx.
_EXPORTS = {
    "Activations": "ntonnx.activations",
    "ArrayDataset": "ntonnx.data",
    "ConvergenceWarning": "ntonnx.method.solve",
    "DataError": "ntonnx.errors",
    "DataOptions": "ntonnx.data",
    "Dataset": "ntonnx.data",
    "EvaluationResult": "ntonnx.api",
    "HeadFit": "ntonnx.method.solve",
    "HeadQuery": "ntonnx.graph.options",
    "HeadSpec": "ntonnx.graph.heads",
    "ImagePreprocess": "ntonnx.data",
    "Metrics": "ntonnx.method.metrics",
    "MissingDependencyError": "ntonnx.errors",
    "ModelError": "ntonnx.errors",
    "ModelInfo": "ntonnx.api",
    "NeuronScores": "ntonnx.method.neurons",
    "NtonnxError": "ntonnx.errors",
    "RunOptions": "ntonnx.graph.options",
    "Session": "ntonnx.session",
    "TuneOptions": "ntonnx.method.options",
    "TuneResult": "ntonnx.api",
    "UsageError": "ntonnx.errors",
    "VerificationError": "ntonnx.errors",
    "evaluate": "ntonnx.api",
    "extract": "ntonnx.api",
    "fit_head": "ntonnx.method.solve",
    "inspect_model": "ntonnx.api",
    "method_names": "ntonnx.method.registry",
    "open_dataset": "ntonnx.data",
    "select_spurious": "ntonnx.method.neurons",
    "spuriousness_scores": "ntonnx.method.neurons",
    "tune": "ntonnx.api",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ntonnx' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
