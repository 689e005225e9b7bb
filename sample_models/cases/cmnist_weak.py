"""Colored MNIST with a *weak* shortcut: the colour agrees with the label only 80% of the time.

The recipe of :mod:`.cmnist` unchanged except for the correlation: label ``y`` = digit >= 5,
attribute ``a`` = colour (0 red, 1 green), 5% label noise in training, and ``a = y`` with
probability ρ = 0.8 in the training split and in ``heldout_biased`` (0.9 in ``cmnist``). Shape
(95% predictive) now beats colour, so ERM leans on colour less and the minority groups are
large (20%): the case where a debiasing method has little to gain and must not do harm.

Groups ``g = 2y + a``. Sizes: train 2400, heldout_biased 800, heldout_balanced 800, test 1000.
Model: the small CNN of ``cmnist``, trained from scratch (64-d embedding, ``Linear(64, 2)`` head).
"""

from __future__ import annotations

from pathlib import Path

from sample_models.cases import cmnist

NAME = "cmnist_weak"
AGREE = 0.8


def build(out: Path, seed: int, log=print) -> dict:
    return cmnist.build(out, seed, log, agree=AGREE, name=NAME)
