"""``dfr``: group-balanced re-fit, an upper reference that reads group labels (users rarely have them)."""

from __future__ import annotations

from ntonnx.method.base import FitInputs, Method, Refit, weighted_refit
from ntonnx.method.solve import group_balanced_weights


class Dfr(Method):
    name = "dfr"
    summary = "group-balanced re-fit (upper reference; needs group labels)"
    needs_groups = True

    def fit(self, inputs: FitInputs) -> Refit:
        return weighted_refit(inputs, group_balanced_weights(inputs.tuning.groups), l2=inputs.options.l2)


METHOD = Dfr()
