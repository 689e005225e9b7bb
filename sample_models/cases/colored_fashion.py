"""Multi-class colour shortcut: five Fashion-MNIST classes, each with "its" colour, small CNN.

Coloured MNIST generalised past two classes (as in the multi-colour variants of Zhang et al.
2022's CMNIST and Nam et al. 2020's LfF benchmark), on real garments from Debian's
``dataset-fashion-mnist``:

* label ``y`` (5 classes): 0 pullover, 1 coat, 2 shirt, 3 sandal, 4 sneaker: two groups of
  easily confused classes, so the shape alone is not enough for ERM and colour pays;
* attribute ``a`` (5 values): the colour the garment is drawn in, 0 red, 1 green, 2 blue,
  3 yellow, 4 magenta; colour ``k`` "belongs" to class ``k``;
* training split and ``heldout_biased``: ``a = y`` 90% of the time, otherwise one of the four
  other colours uniformly;
* groups ``g = 5 y + a`` (25 groups); ``heldout_balanced`` and ``test`` hold every (class,
  colour) cell equally: 100 and 200 samples per cell.

Sizes: train 10000, heldout_biased 2500, heldout_balanced 2500, test 5000.

Model: a small CNN trained from scratch by ERM (AdamW, 6 epochs); embedding = the 64-d ReLU layer
before the ``Linear(64, 5)`` head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sample_models.cases.common import (
    Sizes,
    balanced_attribute,
    biased_attribute,
    export_onnx,
    groups_of,
    partition,
    save_split,
    seed_everything,
    train_erm,
    write_manifest,
)
from sample_models.cases.fashion_scenes import load_fashion

NAME = "colored_fashion"
CLASS_OF = {2: 0, 4: 1, 6: 2, 5: 3, 7: 4}  # Fashion-MNIST pullover, coat, shirt, sandal, sneaker
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]], dtype=np.float32)
AGREE = 0.9
SIZES = Sizes(train=10000, heldout_biased=2500, heldout_balanced=2500, test=5000)
TASK = "pullover/coat/shirt/sandal/sneaker (y) in colour red/green/blue/yellow/magenta (a); g = 5y + a"


def colour(images: np.ndarray, attribute: np.ndarray, colours: np.ndarray = COLOURS) -> np.ndarray:
    """(N, 28, 28) grey uint8 -> (N, 3, 28, 28) float32 in [0, 1], drawn in colour ``colours[a]``."""
    grey = (images / 255.0).astype(np.float32)
    return grey[:, None] * colours[attribute][:, :, None, None]


def build(
    out: Path,
    seed: int,
    log=print,
    *,
    name: str = NAME,
    class_of: dict[int, int] = CLASS_OF,
    colours: np.ndarray = COLOURS,
    sizes: Sizes = SIZES,
    task: str = TASK,
) -> dict:
    """Build the case; a variant reuses the recipe with its own classes, colours (one per class) and sizes."""
    import torch
    from torch import nn

    n = len(colours)
    if sorted(class_of.values()) != list(range(n)):
        raise ValueError(f"class_of must map onto classes 0..{n - 1}, one per colour")
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    images, fashion_labels = load_fashion()
    keep = np.flatnonzero(np.isin(fashion_labels, list(class_of)))
    labels = np.array([class_of[c] for c in fashion_labels[keep]], dtype=np.int64)
    parts = partition(labels, sizes, rng)

    train_idx = parts["train"]
    y_train = labels[train_idx]
    a_train = biased_attribute(y_train, AGREE, rng, n)
    x_train = torch.from_numpy(colour(images[keep[train_idx]], a_train, colours))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 7 * 7, 64),
                nn.ReLU(),
            )
            self.head = nn.Linear(64, n)

        def forward(self, image):
            return self.head(self.features(image))

    net = Net()
    log(f"[{name}] ERM training of a small CNN on {len(y_train)} coloured garments, {n} classes")
    train_erm(
        net.parameters(),
        net,
        [x_train],
        torch.from_numpy(y_train),
        epochs=6,
        lr=1e-3,
        batch_size=64,
        seed=seed,
        log=log,
    )

    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, (x_train[:2],), out / "model.onnx", ["image"])
    for split in ("heldout_biased", "heldout_balanced", "test"):
        idx = parts[split]
        y = labels[idx]
        a = biased_attribute(y, AGREE, rng, n) if split == "heldout_biased" else balanced_attribute(y, rng, n)
        save_split(out / f"{split}.npz", {"image": colour(images[keep[idx]], a, colours)}, y, groups_of(y, a, n))
    return write_manifest(
        out,
        {
            "case": name,
            "seed": seed,
            "task": task,
            "backbone": "small CNN trained from scratch",
            "n_classes": n,
            "n_attribute_values": n,
            "train": {"n": len(y_train), "agree": AGREE},
        },
    )
