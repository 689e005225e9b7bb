"""``neurontune``: the paper's method — suppress the neurons NeuronTune scores as spurious, re-fit class-balanced."""

from __future__ import annotations

import numpy as np

from ntonnx.errors import UsageError
from ntonnx.method.base import FitInputs, Method, Refit, weighted_refit
from ntonnx.method.neurons import select_spurious
from ntonnx.method.solve import class_balanced_weights


class NeuronTune(Method):
    name = "neurontune"
    summary = "suppress neurons with delta > threshold, class-balanced re-fit (the paper)"
    needs_identification = True

    def fit(self, inputs: FitInputs) -> Refit:
        options = inputs.options
        suppressed = select_spurious(inputs.scores, options.rule, options.threshold)
        # Dead neurons (constant on the data) carry nothing; if every live one is selected, the
        # re-fit head could only output its bias.
        live = np.flatnonzero(np.ptp(inputs.identification.embeddings, axis=0) > 0)
        if live.size and np.isin(live, suppressed).all():
            raise UsageError(
                f"all {live.size} active embedding neurons scored as spurious (rule '{options.rule}', "
                f"threshold {options.threshold}); raise --threshold or use --rule all"
            )
        weights = class_balanced_weights(inputs.tuning.labels)
        return weighted_refit(inputs, weights, l2=options.l2, suppressed=suppressed)


METHOD = NeuronTune()
