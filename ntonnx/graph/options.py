"""Graph-side option groups: which head to work on, and how to run the model (see :mod:`ntonnx.options`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ntonnx.options import interval, option, optional, validate

#: Where the model pass runs: this process, or actors on a Ray cluster (:mod:`ntonnx.graph.distributed`).
ENGINES = ("local", "ray")
#: What verification runs (see :mod:`ntonnx.graph.verify`): the head's nodes, or the whole model.
VERIFY_SCOPES = ("head", "full")


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
    engine : ``local`` (one onnxruntime session here) or ``ray`` (actors on a Ray cluster; the ``ray`` extra).
    ray_address : the Ray cluster to join (default: start a local one).
    ray_workers : Ray actors, one onnxruntime session each (default: one per cluster CPU, at most 8).
    verify : ``head`` proves the rest of the written graph unchanged and runs only the head's nodes on
        the sample's embeddings; ``full`` runs the whole written model (and the input model) on the sample.
    """

    provider: str = field(
        default="auto",
        metadata=option(
            "Execution provider: auto (CUDA if available, else CPU), cpu, cuda, or a full onnxruntime name.",
            metavar="NAME",
        ),
    )
    batch_size: int = field(default=64, metadata=option("Samples per model call.", kind=int, constraint=interval(1)))
    engine: str = field(
        default="local",
        metadata=option(
            "Where the model runs: local (this process) or ray (actor pool on a Ray cluster; pip install "
            "'ntonnx[ray]').",
            choices=ENGINES,
        ),
    )
    ray_address: str | None = field(
        default=None,
        metadata=option(
            "Ray cluster to join with --engine ray (e.g. ray://head:10001 or auto; default: a local one).",
            metavar="ADDR",
        ),
    )
    ray_workers: int | None = field(
        default=None,
        metadata=option(
            "Ray actors for --engine ray (default: one per cluster CPU, at most 8).",
            kind=int,
            constraint=optional(interval(1)),
        ),
    )
    verify: str = field(
        default="head",
        metadata=option(
            "Verification of the written model: head (prove the rest of the graph unchanged, run the head's "
            "nodes on the sample's embeddings) or full (run the whole model end to end).",
            choices=VERIFY_SCOPES,
        ),
    )

    def __post_init__(self):
        validate(self)
