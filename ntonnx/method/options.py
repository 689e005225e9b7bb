"""The settings of a re-fit, declared once (see :mod:`ntonnx.options`); the defaults are the paper's NeuronTune."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ntonnx.method.neurons import RULES
from ntonnx.options import interval, option, validate


def _method_names() -> tuple[str, ...]:
    from ntonnx.method.registry import method_names  # the registry imports the method modules, which import us

    return method_names()


def _method_help() -> str:
    from ntonnx.method.registry import method_help

    return method_help()


@dataclass(frozen=True)
class TuneOptions:
    """Settings of a re-fit; the defaults are the paper's NeuronTune.

    Attributes
    ----------
    method : a name from :func:`ntonnx.method.registry.method_names`.
    rule : ``"all"`` (paper) or ``"any"``: a neuron is spurious if its score exceeds
        ``threshold`` for all / for some classes.
    threshold : the paper's lambda.
    l2 : ridge strength on standardised embeddings (``auto`` searches its own grid).
    afr_gamma : AFR's temperature on the original model's true-class probability.
    split : share of each class used for identification when one data set plays both roles.
    seed : seed of that split.
    max_iter : L-BFGS iteration limit.
    """

    method: str = field(default="neurontune", metadata=option(_method_help, choices=_method_names))
    rule: str = field(
        default="all", metadata=option("Neuron is spurious if delta > threshold for all/any class.", choices=RULES)
    )
    threshold: float = field(default=0.0, metadata=option("The paper's lambda.", kind=float, constraint=interval()))
    l2: float = field(
        default=1e-3,
        metadata=option("Ridge strength on standardised embeddings.", kind=float, constraint=interval(0)),
    )
    afr_gamma: float = field(
        default=4.0, metadata=option("AFR's weight temperature.", kind=float, constraint=interval())
    )
    split: float = field(
        default=0.5,
        metadata=option("Identification share of each class.", kind=float, constraint=interval(0, 1, closed="neither")),
    )
    seed: int = field(
        default=0, metadata=option("Seed of the identification/tuning split.", kind=int, constraint=interval(0))
    )
    max_iter: int = field(default=1000, metadata=option("L-BFGS iteration limit.", kind=int, constraint=interval(1)))

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict:
        return asdict(self)
