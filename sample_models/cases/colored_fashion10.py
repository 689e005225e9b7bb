"""Many classes: all ten Fashion-MNIST classes, each drawn in "its" colour most of the time.

The recipe of :mod:`.colored_fashion` scaled to every class, the regime where per-class pseudo
groups get small:

* label ``y`` (10 classes): the Fashion-MNIST label (0 T-shirt/top, 1 trouser, 2 pullover,
  3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot);
* attribute ``a`` (10 values): the colour, ten hues 36° apart at full saturation (hue ``k``/10
  goes with class ``k``);
* training split and ``heldout_biased``: ``a = y`` 90% of the time, else one of the nine other
  colours uniformly (so about 11 minority samples per (class, colour) cell in ``heldout_biased``);
* groups ``g = 10 y + a`` (100 groups); ``heldout_balanced`` and ``test`` hold every cell equally:
  50 and 100 samples per cell.

Sizes: train 20000, heldout_biased 5000, heldout_balanced 5000, test 10000.
Model: the small CNN of ``colored_fashion`` trained from scratch (64-d embedding, ``Linear(64, 10)``).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from sample_models.cases import colored_fashion
from sample_models.cases.common import Sizes

NAME = "colored_fashion10"
CLASS_OF = {k: k for k in range(10)}
COLOURS = np.array([colorsys.hsv_to_rgb(k / 10, 1.0, 1.0) for k in range(10)], dtype=np.float32)
SIZES = Sizes(train=20000, heldout_biased=5000, heldout_balanced=5000, test=10000)


def build(out: Path, seed: int, log=print) -> dict:
    return colored_fashion.build(
        out,
        seed,
        log,
        name=NAME,
        class_of=CLASS_OF,
        colours=COLOURS,
        sizes=SIZES,
        task="Fashion-MNIST label (y, 10 classes) in one of 10 hues (a), hue k goes with class k; g = 10y + a",
    )
