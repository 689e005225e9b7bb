"""``shoes_scenes_ft`` with three times the biased held-out data: 3000 samples for 1280 dimensions.

Why: ``pgdfr`` re-fits by group-balanced *weights* when the held-out samples outnumber the embedding
dimensions and by DFR's *subsampling* otherwise, a rule chosen after the nine other cases had been
seen (their 1280-d cases all had 1000-1200 held-out samples, where any labelling is separable and
weights lose their grip). This case was built afterwards to test the rule where it predicts the
other branch on the same kind of model: the recipe and sizes of :mod:`.shoes_scenes_ft` except
``heldout_biased`` (3000 instead of 1000).
"""

from __future__ import annotations

from pathlib import Path

from sample_models.cases import shoes_scenes_ft
from sample_models.cases.common import Sizes

NAME = "shoes_scenes_ft_large"
SIZES = Sizes(train=2000, heldout_biased=3000, heldout_balanced=1000, test=1600)


def build(out: Path, seed: int, log=print) -> dict:
    return shoes_scenes_ft.build(
        out, seed, log, name=NAME, sizes=SIZES, task=f"{shoes_scenes_ft.TASK}, 3000 biased held-out"
    )
