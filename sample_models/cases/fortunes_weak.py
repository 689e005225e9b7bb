"""The fortunes text case with a *weak* shortcut: the planted token agrees with the topic 80% of the time.

The recipe of :mod:`.fortunes_minilm` unchanged except for the correlation: label ``y`` = topic
(0 technology, 1 society), attribute ``a`` = the text starts with "well,", and ``a = y`` with
probability ρ = 0.8 in the training split and in ``heldout_biased`` (0.95 in
``fortunes_minilm``). The token is trivial to detect but now only about as predictive as the
topic words, so ERM uses it partly: a weak shortcut on a text model.

Groups ``g = 2y + a``. Sizes: train 1600, heldout_biased 600, heldout_balanced 600, test 800.
Model: all-MiniLM-L6-v2 (last layer + ``Linear(384, 2)`` head fine-tuned), token ids in.
"""

from __future__ import annotations

from pathlib import Path

from sample_models.cases import fortunes_minilm

NAME = "fortunes_weak"
AGREE = 0.8


def build(out: Path, seed: int, log=print) -> dict:
    return fortunes_minilm.build(out, seed, log, agree=AGREE, name=NAME)
