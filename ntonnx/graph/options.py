"""Graph-side option groups: which head to work on, and how to run the model (see :mod:`ntonnx.options`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ntonnx.options import interval, option, validate


@dataclass(frozen=True)
class HeadQuery:
    """Overrides of head detection; all None means "find the head from the graph outputs".

    Attributes
    ----------
    output : the graph output (a tensor name) to follow back to the head, when outputs lead to different heads.
    head_node : a node of the head (or the tensor it produces), skipping detection.
    embedding : the head's input tensor, skipping detection.
    """

    output: str | None = field(default=None, metadata=option("Graph output to follow to the head.", metavar="NAME"))
    head_node: str | None = field(
        default=None, metadata=option("Name of the head node (skip detection).", metavar="NAME")
    )
    embedding: str | None = field(
        default=None, metadata=option("Name of the head's input tensor (skip detection).", metavar="TENSOR")
    )


@dataclass(frozen=True)
class RunOptions:
    """How onnxruntime runs the model.

    Attributes
    ----------
    provider : ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, or a full onnxruntime provider name.
    batch_size : samples per model call (a model exported with a fixed batch uses its own).
    """

    provider: str = field(
        default="auto",
        metadata=option(
            "Execution provider: auto (CUDA if available, else CPU), cpu, cuda, or a full onnxruntime name.",
            metavar="NAME",
        ),
    )
    batch_size: int = field(default=64, metadata=option("Samples per model call.", kind=int, constraint=interval(1)))

    def __post_init__(self):
        validate(self)
