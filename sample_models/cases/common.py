"""Shared pieces of the benchmark cases: group-structured splits, ERM training, export, files.

Every case follows the recipe of the spurious-correlation literature: a label ``y`` (the core
task) and an attribute ``a`` (background, colour, a token) that is independent of ``y`` in
nature but made to agree with it in the training data. With ``n_values`` attribute values (2
unless the case says otherwise; a multi-class case gives each class "its" value, ``a = y``),
groups are ``g = y * n_values + a``, so ``g = 2 * y + a`` for a binary attribute; the minority
groups are the ones where ``a != y``. Each case writes four data files next to its
ONNX model, all in ntonnx's ``.npz`` format (one array per model input, ``labels``, ``groups``):

``heldout_biased.npz``    held-out data with the training correlation (what users usually have)
``heldout_balanced.npz``  held-out data with every group equally large
``test.npz``              group-balanced test data (every number in the tables is measured here)

plus ``case.json`` (what was built, from which seed, and the ERM accuracies measured with
onnxruntime on the exported file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("heldout_biased", "heldout_balanced", "test")


@dataclass
class Sizes:
    """Samples per split; balanced ones need a multiple of (classes x attribute values) for equal groups."""

    train: int
    heldout_biased: int
    heldout_balanced: int
    test: int


def partition(labels: np.ndarray, sizes: Sizes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint source indices per split, stratified by label, so no split shares a source item.

    Balanced splits take the same number of items from each class (they are cut to equal groups
    later), biased ones take the classes in equal shares as well, so that ``a`` alone carries
    the correlation.
    """
    classes = np.unique(labels)
    pools = {y: list(rng.permutation(np.flatnonzero(labels == y))) for y in classes}
    out = {}
    for name in ("train", *SPLITS):
        per_class = getattr(sizes, name) // len(classes)
        taken = []
        for y in classes:
            if len(pools[y]) < per_class:
                raise ValueError(f"not enough items of class {y} for split '{name}' ({per_class} needed)")
            taken.extend(pools[y][:per_class])
            pools[y] = pools[y][per_class:]
        out[name] = rng.permutation(np.array(taken, dtype=np.int64))
    return out


def biased_attribute(labels: np.ndarray, agree: float, rng: np.random.Generator, n_values: int = 2) -> np.ndarray:
    """``a = y`` with probability ``agree``, else one of the other ``n_values - 1`` values uniformly.

    ``labels`` must lie in ``[0, n_values)``: attribute value ``k`` is the one that goes with class
    ``k``. With two values the other one is ``1 - y`` and no further random numbers are drawn, so
    binary cases get the same attributes as before multi-valued ones existed.
    """
    flip = rng.random(len(labels)) >= agree
    if n_values == 2:
        return np.where(flip, 1 - labels, labels).astype(np.int64)
    shift = rng.integers(1, n_values, size=len(labels))
    return np.where(flip, (labels + shift) % n_values, labels).astype(np.int64)


def balanced_attribute(labels: np.ndarray, rng: np.random.Generator, n_values: int = 2) -> np.ndarray:
    """Every class split into ``n_values`` equal parts, one per attribute value: all groups equally large."""
    attribute = np.zeros(len(labels), dtype=np.int64)
    for y in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == y))
        bounds = [len(members) * k // n_values for k in range(n_values + 1)]
        for k in range(n_values):  # the first part gets the highest value (binary: first half a = 1)
            attribute[members[bounds[k] : bounds[k + 1]]] = n_values - 1 - k
    return attribute


def groups_of(labels: np.ndarray, attribute: np.ndarray, n_values: int = 2) -> np.ndarray:
    """Group index ``y * n_values + a`` of shape (n_samples,)."""
    return (n_values * labels + attribute).astype(np.int64)


def save_split(path: Path, inputs: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray) -> None:
    """Write one split atomically in ntonnx's ``.npz`` format."""
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **inputs, labels=labels.astype(np.int64), groups=groups.astype(np.int64))
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    import torch

    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_erm(
    parameters: Iterable,
    forward: Callable,
    tensors: list,
    labels,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    log: Callable[[str], None] = print,
) -> None:
    """Plain ERM: AdamW on mean cross-entropy over shuffled mini-batches of the training split."""
    import torch

    params = [p for p in parameters if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total, correct = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits = forward(*(t[idx] for t in tensors))
            loss = torch.nn.functional.cross_entropy(logits, labels[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        log(f"  epoch {epoch + 1}/{epochs}: train loss {total / n:.4f}, train acc {correct / n:.3f}")


def export_onnx(
    module,
    example: tuple,
    path: Path,
    input_names: list[str],
    *,
    dynamic_axes: dict | None = None,
) -> None:
    """Export ``module`` (eval mode) to a single ONNX file with output ``logits``, opset 17."""
    import torch

    module.eval()
    axes = dynamic_axes or {name: {0: "batch"} for name in input_names}
    axes = {**axes, "logits": {0: "batch"}}
    tmp = path.with_name(f".{path.name}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            module,
            example,
            str(tmp),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, path)


def write_manifest(out: Path, info: dict) -> dict:
    """Measure ERM on every split with onnxruntime (through ntonnx) and write ``case.json``."""
    import ntonnx

    erm = {}
    for split in SPLITS:
        metrics = ntonnx.evaluate(out / "model.onnx", out / f"{split}.npz").metrics
        erm[split] = {
            "n": metrics.n_samples,
            "accuracy": round(metrics.accuracy, 4),
            "worst_group": round(metrics.worst_group, 4),
            "per_group": {str(g): round(a, 4) for g, a in metrics.per_group.items()},
            "group_sizes": {str(g): n for g, n in metrics.group_sizes.items()},
        }
    info = {**info, "erm": erm}
    tmp = out / ".case.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, out / "case.json")
    return info
