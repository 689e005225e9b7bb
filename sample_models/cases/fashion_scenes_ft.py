"""The Waterbirds-style scenes of :mod:`.fashion_scenes` with a *fully* fine-tuned EfficientNet-Lite0.

Same task and data recipe as ``fashion_scenes`` (real Fashion-MNIST garments pasted on crops of
scikit-learn's two sample photos), but every layer of the backbone is trained, as in the
Waterbirds/CelebA ERM baselines of the DFR paper, so the embedding itself is shaped by the
shortcut rather than being ImageNet's:

* label ``y``: 0 = pullover or coat, 1 = shirt or T-shirt;
* attribute ``a``: the background, 0 = ``china.jpg`` (a temple), 1 = ``flower.jpg``;
* training split and ``heldout_biased``: ``a = y`` 95% of the time; groups ``g = 2y + a``.

Sizes: train 2400, heldout_biased 1000, heldout_balanced 1000, test 1600; images are 48x48
(garments 24-32 px) so that full fine-tuning fits in a few minutes on two CPU cores.

Model: EfficientNet-Lite0 with ImageNet weights and a new ``Linear(1280, 2)`` head; ERM (AdamW,
lr 3e-4, 3 epochs) updates all weights, stem to head. Batch norm keeps its ImageNet running
statistics (its scale and shift are trained) and drop-connect is off, so the exported graph is
exactly the trained function. Embedding = the 1280-d pooled features.

At this size the fine-grained task is hard and ERM leans on the background almost alone (seed 0:
test accuracy 51%, worst group 0%), yet the embedding still holds the garment: a logistic
re-fit on the group-balanced held-out split reaches about 60% worst-group accuracy. See
:mod:`.shoes_scenes_ft` for a fully fine-tuned case where ERM learns part of the shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sample_models.cases.common import (
    Sizes,
    biased_attribute,
    export_onnx,
    partition,
    seed_everything,
    train_erm,
    write_manifest,
)
from sample_models.cases.fashion_scenes import CLASS_OF, backbone, compose, load_fashion, save_scene_splits

NAME = "fashion_scenes_ft"
AGREE = 0.95
SIZE = 48
SIZES = Sizes(train=2400, heldout_biased=1000, heldout_balanced=1000, test=1600)
TASK = "pullover/coat (y=0) vs shirt/T-shirt (y=1) on temple (a=0) / flower (a=1) backgrounds"


def build(
    out: Path,
    seed: int,
    log=print,
    *,
    name: str = NAME,
    class_of: dict[int, int] = CLASS_OF,
    size: int = SIZE,
    sizes: Sizes = SIZES,
    task: str = TASK,
) -> dict:
    """Build the case; a variant reuses it with its own garments (Fashion-MNIST label -> y), size and splits."""
    import torch

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    images, fashion_labels = load_fashion()
    keep = np.flatnonzero(np.isin(fashion_labels, list(class_of)))
    labels = np.array([class_of[c] for c in fashion_labels[keep]], dtype=np.int64)
    parts = partition(labels, sizes, rng)

    net = backbone(2, size)
    net.eval()  # batch norm keeps its ImageNet statistics; dropout and drop-connect are off
    train_idx = parts["train"]
    y_train = labels[train_idx]
    a_train = biased_attribute(y_train, AGREE, rng)
    log(f"[{name}] composing {len(y_train)} training scenes ({size}px)")
    x_train = torch.from_numpy(compose(images[keep[train_idx]], a_train, rng, size))
    log(f"[{name}] ERM fine-tuning of all layers")
    train_erm(
        net.parameters(),
        net,
        [x_train],
        torch.from_numpy(y_train),
        epochs=3,
        lr=3e-4,
        batch_size=32,
        seed=seed,
        weight_decay=1e-4,
        log=log,
    )

    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, (x_train[:2],), out / "model.onnx", ["image"])
    save_scene_splits(out, images[keep], labels, parts, rng, size)
    return write_manifest(
        out,
        {
            "case": name,
            "seed": seed,
            "task": task,
            "backbone": f"EfficientNet-Lite0 (ImageNet), all layers fine-tuned, {size}px",
            "train": {"n": len(y_train), "agree": AGREE},
        },
    )
