"""``llr``: class-balanced last-layer re-training with no suppression, the ablation that shows what selection adds."""

from __future__ import annotations

from ntonnx.method.base import FitInputs, Method, Refit, weighted_refit
from ntonnx.method.solve import class_balanced_weights


class Llr(Method):
    name = "llr"
    summary = "class-balanced re-fit, no suppression (the ablation)"

    def fit(self, inputs: FitInputs) -> Refit:
        return weighted_refit(inputs, class_balanced_weights(inputs.tuning.labels), l2=inputs.options.l2)


METHOD = Llr()
