"""What every re-fitting method is: a name, what it needs, and ``fit`` from activations to a new head.

A method is one small module in :mod:`ntonnx.method` that defines ``METHOD``, an instance of a
:class:`Method` subclass; :mod:`ntonnx.method.registry` finds it. The pipeline (``ntonnx.tune``)
does what is common to all of them once: the class and group checks on the tuning data, the
identification split, NeuronTune's scores when a method needs them, and writing the result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ntonnx.activations import Activations
from ntonnx.method.neurons import NeuronScores

if TYPE_CHECKING:
    from ntonnx.method.options import TuneOptions


@dataclass(frozen=True)
class FitInputs:
    """Everything a method may use to re-fit the head.

    Attributes
    ----------
    tuning : activations the head is re-fit on.
    identification : activations NeuronTune's scores come from (None unless the method needs them).
    scores : NeuronTune's per-class scores of ``identification`` (None unless the method needs them).
    original : the original head ``(W, b)``, W of shape (n_logits, dim), b of shape (n_logits,).
    fit_intercept : False for a head without a bias (the re-fit keeps the graph's structure).
    options : the run's settings.
    """

    tuning: Activations
    identification: Activations | None
    scores: NeuronScores | None
    original: tuple[np.ndarray, np.ndarray]
    fit_intercept: bool
    options: TuneOptions


@dataclass
class Refit:
    """A method's result: the head to write and what the method decided.

    Attributes
    ----------
    W : ndarray of shape (n_logits, dim); columns of suppressed neurons are zero.
    b : ndarray of shape (n_logits,)
    converged : whether the solver met its tolerance (None when nothing was solved).
    suppressed : sorted indices of the neurons whose weights were zeroed.
    selected : for methods that choose among candidates, the one chosen.
    details : method-specific facts for the report (JSON-serialisable).
    """

    W: np.ndarray
    b: np.ndarray
    converged: bool | None
    suppressed: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    selected: str | None = None
    details: dict = field(default_factory=dict)


class Method(ABC):
    """A re-fitting method. Subclasses set the class attributes and implement :meth:`fit`.

    Attributes
    ----------
    name : the ``--method`` value.
    summary : one line for ``--help`` and the README's table.
    needs_identification : the pipeline splits off an identification set and computes NeuronTune's scores.
    needs_groups : the tuning data must carry group labels (reference methods only).
    refits : False for a method that keeps the original head (the pipeline then needs no class check).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_identification: ClassVar[bool] = False
    needs_groups: ClassVar[bool] = False
    refits: ClassVar[bool] = True

    def check(self, options: TuneOptions) -> None:  # noqa: B027 - most methods have nothing to check
        """Refuse settings this method cannot honour (a :class:`~ntonnx.errors.UsageError`), before any work."""

    @abstractmethod
    def fit(self, inputs: FitInputs) -> Refit:
        """Re-fit the head; must not read ``groups`` unless :attr:`needs_groups`."""


def weighted_refit(
    inputs: FitInputs,
    sample_weight: np.ndarray,
    *,
    l2: float,
    suppressed: np.ndarray | None = None,
    anchor_strength: float = 0.0,
) -> Refit:
    """The one solve most methods are: :func:`~ntonnx.method.solve.fit_head` on the tuning set with these weights."""
    from ntonnx.method.solve import fit_head

    W0, _ = inputs.original
    suppressed = np.array([], dtype=np.int64) if suppressed is None else np.asarray(suppressed, dtype=np.int64)
    fit = fit_head(
        inputs.tuning.embeddings,
        inputs.tuning.labels,
        n_logits=W0.shape[0],
        sample_weight=sample_weight,
        suppressed=suppressed,
        l2=l2,
        init=inputs.original,
        anchor_strength=anchor_strength,
        fit_intercept=inputs.fit_intercept,
        max_iter=inputs.options.max_iter,
    )
    return Refit(W=fit.W, b=fit.b, converged=fit.converged, suppressed=suppressed)
