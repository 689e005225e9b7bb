"""Fully fine-tuned EfficientNet-Lite0 on an easier scenes task: sneakers vs ankle boots.

The recipe of :mod:`.fashion_scenes_ft` (every layer trained, batch norm on its ImageNet
statistics) with a core task that a small image still shows, so that ERM learns the shape *and*
the background instead of the background alone (in ``fashion_scenes_ft`` the fine-grained tops
task lets ERM collapse onto the background):

* label ``y``: 0 = sneaker, 1 = ankle boot (Fashion-MNIST, Debian ``dataset-fashion-mnist``);
* attribute ``a``: the background, 0 = ``china.jpg`` (a temple), 1 = ``flower.jpg``;
* training split and ``heldout_biased``: ``a = y`` 95% of the time; groups ``g = 2y + a``.

Sizes: train 2000, heldout_biased 1000, heldout_balanced 1000, test 1600; images are 40x40
(shoes 20-27 px). Model: EfficientNet-Lite0 (ImageNet), all layers fine-tuned by ERM (AdamW,
lr 3e-4, 3 epochs), ``Linear(1280, 2)`` head on the 1280-d pooled features.
"""

from __future__ import annotations

from pathlib import Path

from sample_models.cases import fashion_scenes_ft
from sample_models.cases.common import Sizes

NAME = "shoes_scenes_ft"
CLASS_OF = {7: 0, 9: 1}  # Fashion-MNIST sneaker -> 0, ankle boot -> 1
SIZE = 40
SIZES = Sizes(train=2000, heldout_biased=1000, heldout_balanced=1000, test=1600)


TASK = "sneaker (y=0) vs ankle boot (y=1) on temple (a=0) / flower (a=1) backgrounds"


def build(out: Path, seed: int, log=print, *, name: str = NAME, sizes: Sizes = SIZES, task: str = TASK) -> dict:
    return fashion_scenes_ft.build(out, seed, log, name=name, class_of=CLASS_OF, size=SIZE, sizes=sizes, task=task)
