"""``afr``: AFR's weights ``exp(-gamma * p_true)``, pulled towards the original head instead of towards zero."""

from __future__ import annotations

from ntonnx.method.base import FitInputs, Method, Refit, weighted_refit
from ntonnx.method.solve import afr_weights


class Afr(Method):
    name = "afr"
    summary = "weights exp(-gamma * p_true), pulled to the original head"

    def fit(self, inputs: FitInputs) -> Refit:
        tuning, options = inputs.tuning, inputs.options
        weights = afr_weights(tuning.logits, tuning.labels, options.afr_gamma)
        return weighted_refit(inputs, weights, l2=0.0, anchor_strength=options.l2)


METHOD = Afr()
