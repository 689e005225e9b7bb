"""The data stage: labelled held-out data in any supported form, streamed as model inputs.

:func:`~ntonnx.data.open.open_dataset` is the entry point; :class:`~ntonnx.data.options.DataOptions`
says how to read; every form is a :class:`~ntonnx.data.dataset.Dataset`. Nothing here imports
onnx, onnxruntime or :mod:`ntonnx.graph`: the model's inputs arrive as plain :class:`InputSpec` values.
"""

from ntonnx.data.dataset import ArrayDataset, Dataset, InputSpec
from ntonnx.data.open import open_dataset
from ntonnx.data.options import FORMATS, DataOptions
from ntonnx.data.preprocess import ImagePreprocess

__all__ = ["FORMATS", "ArrayDataset", "DataOptions", "Dataset", "ImagePreprocess", "InputSpec", "open_dataset"]
