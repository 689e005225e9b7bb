"""``erm``: keep the original head (evaluation only), so pipelines can treat every method the same way."""

from __future__ import annotations

from ntonnx.method.base import FitInputs, Method, Refit


class Erm(Method):
    name = "erm"
    summary = "keep the original head (evaluation only)"
    refits = False

    def fit(self, inputs: FitInputs) -> Refit:
        W, b = inputs.original
        return Refit(W=W, b=b, converged=None)


METHOD = Erm()
