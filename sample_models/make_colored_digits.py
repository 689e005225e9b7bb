"""Build the "Colored digits" sample model used in the ntonnx README quickstart.

Task
----
A small spurious-correlation benchmark in the style of Colored MNIST, built from
scikit-learn's bundled ``load_digits()`` data (1797 real 8x8 grayscale scans of
handwritten digits; nothing is downloaded).

* Label ``y``: the digit's *shape* class, ``y = 0`` for digits 0-4 and ``y = 1``
  for digits 5-9.
* Spurious attribute ``c``: the colour the digit is drawn in, ``c = 0`` red,
  ``c = 1`` green. Each grayscale digit is upsampled to 16x16 and written into
  the red or the green channel of a 3-channel image (the other channels only
  get background noise).
* Group ``g = 2 * y + c``: 0 = (0-4, red), 1 = (0-4, green), 2 = (5-9, red),
  3 = (5-9, green).

In the training split and in the biased held-out split the colour agrees with
the label (red for 0-4, green for 5-9) with probability ``--agree`` (default
0.9), so groups 0 and 3 are the majority groups and 1 and 2 the minority ones.
The test split and the balanced held-out split are group-balanced: every source
image is rendered once in each colour and each group is then cut to the same
size.

The 1797 source images are first split (stratified by digit) into four disjoint
parts -- train 50% / heldout 20% / heldout_balanced 10% / test 20% -- and only
then augmented (``--train-copies`` / ``--heldout-copies`` renderings per source
with random integer shifts of up to ``--max-shift`` pixels, a random contrast
factor in [0.7, 1], Gaussian pixel noise ``--noise``, 8-bit quantisation) and
coloured, so no split shares an underlying scan with another. Colour is drawn
independently for every rendering.

Model and training
------------------
``ColoredDigitsCNN``: conv3x3(3->16) -> ReLU -> maxpool2 -> conv3x3(16->32) ->
ReLU -> maxpool2 -> flatten (512) -> Linear(512->64) -> ReLU (the 64-d
embedding) -> Linear(64->2) head, which the export turns into the final
``Gemm`` node.

It is trained by plain ERM (cross-entropy, Adam, lr 1e-3, weight decay 1e-4,
batch 64) on the biased training split. What makes colour the dominant
shortcut: colour is a trivially easy per-channel signal that the network picks
up first, it is 90% predictive, and training is stopped early (``--epochs
10``), before the network has learned to classify the 10% minority renderings
by shape. Held-out and test labels are always the clean shape class.
Two further knobs are available but off by default: ``--label-noise`` (the
Colored-MNIST trick of flipping a fraction of the *training* labels before
drawing the colour, which makes colour even more dominant) and ``--tint``
(leaking a fraction of the digit into the other channels).

Outputs (in ``--out``, default ``sample_models/colored_digits``)
-----------------------------------------------------------------
* ``model.onnx``             single-file ONNX, opset 17, input ``image``
                             (float32, N x 3 x 16 x 16, dynamic N), output
                             ``logits`` (N x 2).
* ``heldout.npz``            biased held-out split (colour agrees like train).
* ``heldout_balanced.npz``   group-balanced held-out split.
* ``test.npz``               group-balanced test split.
* ``README.md``              description and the ERM accuracies measured with
                             onnxruntime on the exported file.

Each ``.npz`` holds ``image`` (float32, N x 3 x 16 x 16, exactly the model
input), ``labels`` (int64, N) and ``groups`` (int64, N).

Usage::

    python sample_models/make_colored_digits.py            # seed 0
    python sample_models/make_colored_digits.py --seed 1 --out /tmp/cd1

Requires numpy, scipy, scikit-learn, torch, onnx and onnxruntime. torch is only needed
to (re)build this sample; it is not a runtime dependency of ntonnx.
Re-running with the same seed on the same machine and library versions gives
the same data and, on CPU, the same model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

SIZE = 16  # side length of the rendered images
GROUP_NAMES = {
    0: "y=0 (digit 0-4), red",
    1: "y=0 (digit 0-4), green",
    2: "y=1 (digit 5-9), red",
    3: "y=1 (digit 5-9), green",
}
SPLIT_FRACTIONS = {"train": 0.50, "heldout": 0.20, "heldout_balanced": 0.10, "test": 0.20}


# --------------------------------------------------------------------------- data
def split_sources(seed: int) -> dict[str, np.ndarray]:
    """Stratified split of the 1797 digit indices into four disjoint parts."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    rng = np.random.default_rng([seed, 1])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLIT_FRACTIONS}
    names = list(SPLIT_FRACTIONS)
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(target == digit))
        cuts = np.round(np.cumsum([SPLIT_FRACTIONS[k] for k in names]) * len(idx)).astype(int)
        start = 0
        for name, stop in zip(names, cuts, strict=True):
            parts[name].append(idx[start:stop])
            start = stop
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def _upsample(images8: np.ndarray) -> np.ndarray:
    """(N, 8, 8) in [0, 16] -> (N, 16, 16) in [0, 1], bilinear."""
    from scipy.ndimage import zoom

    x = images8.astype(np.float64) / 16.0
    up = zoom(x, (1, SIZE / 8, SIZE / 8), order=1, mode="nearest", grid_mode=True)
    return np.clip(up, 0.0, 1.0)


def render(
    gray16: np.ndarray, colours: np.ndarray, rng: np.random.Generator, max_shift: int, noise: float, tint: float
) -> np.ndarray:
    """Augment and colour grayscale 16x16 digits -> float32 (N, 3, 16, 16) in [0, 1]."""
    n = len(gray16)
    out = np.zeros((n, 3, SIZE, SIZE), dtype=np.float64)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    contrast = rng.uniform(0.7, 1.0, size=n)
    for i in range(n):
        img = np.zeros((SIZE, SIZE))
        dy, dx = shifts[i]
        src = gray16[i]
        ys, yd = (slice(0, SIZE - dy), slice(dy, SIZE)) if dy >= 0 else (slice(-dy, SIZE), slice(0, SIZE + dy))
        xs, xd = (slice(0, SIZE - dx), slice(dx, SIZE)) if dx >= 0 else (slice(-dx, SIZE), slice(0, SIZE + dx))
        img[yd, xd] = src[ys, xs]
        rgb = np.full(3, tint)
        rgb[colours[i]] = 1.0  # red = (1, t, t), green = (t, 1, t)
        out[i] = rgb[:, None, None] * (img * contrast[i])
    out += rng.normal(0.0, noise, size=out.shape)
    # quantise to 8-bit levels: looks like a real image and compresses well
    out = np.round(np.clip(out, 0.0, 1.0) * 255.0) / 255.0
    return out.astype(np.float32)


def make_biased(
    gray16: np.ndarray,
    y_true: np.ndarray,
    copies: int,
    agree: float,
    label_noise: float,
    rng: np.random.Generator,
    max_shift: int,
    noise: float,
    tint: float,
) -> dict[str, np.ndarray]:
    """`copies` augmented renderings per source; colour agrees with the label w.p. `agree`.

    With label_noise > 0 the label is first flipped w.p. label_noise and the colour is
    drawn from the *flipped* label (Colored-MNIST style); only used for training.
    """
    src = np.repeat(np.arange(len(gray16)), copies)
    y = y_true[src].copy()
    if label_noise > 0:
        flip = rng.random(len(y)) < label_noise
        y[flip] = 1 - y[flip]
    c = np.where(rng.random(len(y)) < agree, y, 1 - y)
    image = render(gray16[src], c, rng, max_shift, noise, tint)
    return {"image": image, "labels": y.astype(np.int64), "groups": (2 * y + c).astype(np.int64)}


def make_balanced(
    gray16: np.ndarray, y_true: np.ndarray, rng: np.random.Generator, max_shift: int, noise: float, tint: float
) -> dict[str, np.ndarray]:
    """Every source rendered once red and once green; groups cut to equal size."""
    n = len(gray16)
    src = np.concatenate([np.arange(n), np.arange(n)])
    c = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    y = y_true[src]
    g = 2 * y + c
    per_group = np.bincount(g, minlength=4).min()
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(g == k))[:per_group] for k in range(4)]))
    image = render(gray16[src[keep]], c[keep], rng, max_shift, noise, tint)
    return {"image": image, "labels": y[keep].astype(np.int64), "groups": g[keep].astype(np.int64)}


def build_data(args: argparse.Namespace) -> dict[str, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = _upsample(digits.images)
    y_all = (digits.target >= 5).astype(np.int64)
    parts = split_sources(args.seed)
    kw = {"max_shift": args.max_shift, "noise": args.noise, "tint": args.tint}
    data = {}
    rng = np.random.default_rng([args.seed, 2])
    data["train"] = make_biased(
        gray[parts["train"]], y_all[parts["train"]], args.train_copies, args.agree, args.label_noise, rng, **kw
    )
    rng = np.random.default_rng([args.seed, 3])
    data["heldout"] = make_biased(
        gray[parts["heldout"]], y_all[parts["heldout"]], args.heldout_copies, args.agree, 0.0, rng, **kw
    )
    rng = np.random.default_rng([args.seed, 4])
    hb = parts["heldout_balanced"]
    data["heldout_balanced"] = make_balanced(gray[hb], y_all[hb], rng, **kw)
    rng = np.random.default_rng([args.seed, 5])
    data["test"] = make_balanced(gray[parts["test"]], y_all[parts["test"]], rng, **kw)
    return data


# -------------------------------------------------------------------------- model
def make_model(embed_dim: int):
    import torch.nn as nn

    class ColoredDigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),  # 8x8
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),  # 4x4
                nn.Flatten(),
                nn.Linear(32 * (SIZE // 4) ** 2, embed_dim),
                nn.ReLU(),  # embedding = input of the head
            )
            self.head = nn.Linear(embed_dim, 2)

        def forward(self, image):
            return self.head(self.features(image))

    return ColoredDigitsCNN()


def train(model, data: dict[str, np.ndarray], args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(data["image"])
    y = torch.from_numpy(data["labels"])
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    model.train()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), args.batch_size):
            b = perm[start : start + args.batch_size]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        print(f"  epoch {epoch + 1}/{args.epochs}  train loss {total / len(x):.4f}")
    model.eval()


# ---------------------------------------------------------------------- evaluation
def accuracies(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict:
    pred = logits.argmax(1)
    correct = pred == labels
    per_group = {int(g): float(correct[groups == g].mean()) for g in range(4) if np.any(groups == g)}
    return {
        "mean": float(correct.mean()),
        "per_group": per_group,
        "worst_group": min(per_group.values()),
        "counts": {int(g): int((groups == g).sum()) for g in range(4)},
    }


def ort_logits(path: Path, image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"image": image})[0]


def export(model, path: Path) -> str:
    """Export to a single-file ONNX model; returns the name of the head's input tensor."""
    import torch

    dummy = torch.zeros(2, 3, SIZE, SIZE)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
    )
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    last = m.graph.node[-1]
    assert last.op_type == "Gemm" and last.output[0] == "logits", (last.op_type, list(last.output))
    assert not os.path.exists(str(path) + ".data")
    return last.input[0]


def write_readme(out: Path, args: argparse.Namespace, results: dict, sizes: dict, versions: str) -> None:
    def row(name: str) -> str:
        r = results[name]
        cells = " | ".join(f"{100 * r['per_group'][g]:.1f}" for g in range(4))
        n = sum(r["counts"].values())
        return f"| `{name}` | {n} | {100 * r['mean']:.1f} | {cells} | {100 * r['worst_group']:.1f} |"

    counts = "\n".join(
        f"| `{name}.npz` | " + " | ".join(str(results[name]["counts"][g]) for g in range(4)) + " |"
        for name in ("heldout", "heldout_balanced", "test")
    )
    noise_note = (
        f" In addition {100 * args.label_noise:.0f}% of the *training* labels were flipped"
        " before drawing the colour (Colored-MNIST style)."
        if args.label_noise > 0
        else ""
    )
    n_train = results["n_train"]
    embedding = results["embedding"]
    rows = [row(name) for name in ("heldout", "heldout_balanced", "test")]
    size_model, size_heldout = sizes["model.onnx"], sizes["heldout.npz"]
    size_heldout_bal, size_test = sizes["heldout_balanced.npz"], sizes["test.npz"]
    text = f"""# Colored digits: a small spuriously biased ONNX classifier

A real (if tiny) model for trying out ntonnx. It was produced by
[`../make_colored_digits.py`](../make_colored_digits.py) with `--seed {args.seed}`;
see that script's docstring for every detail.

## Task

Colored-MNIST-style spurious correlation on scikit-learn's bundled
`load_digits()` data (1797 real 8x8 handwritten digits, upsampled to 16x16):

* label `y`: 0 for digits 0-4, 1 for digits 5-9 (the *shape* decides it);
* spurious attribute `c`: the digit is drawn in red (`c = 0`) or green (`c = 1`);
* group `g = 2*y + c`:

| g | y | colour | in the biased splits |
|---|---|--------|----------------------|
| 0 | 0 (digits 0-4) | red   | majority |
| 1 | 0 (digits 0-4) | green | minority |
| 2 | 1 (digits 5-9) | red   | minority |
| 3 | 1 (digits 5-9) | green | majority |

In the training data and in `heldout.npz` colour agrees with the label
{100 * args.agree:.0f}% of the time; `heldout_balanced.npz` and `test.npz` are
group-balanced. The source scans are split into train / heldout /
heldout_balanced / test *before* augmentation (random shifts up to
{args.max_shift} px, contrast jitter, pixel noise sigma {args.noise}), so the
splits share no underlying image.

The CNN (conv16 -> conv32 -> fc{args.embed_dim} + ReLU embedding, then a
`Linear({args.embed_dim}, 2)` head that is the final `Gemm` node of the graph) was
trained by plain ERM (cross-entropy, Adam lr {args.lr}, weight decay
{args.weight_decay}, {args.epochs} epochs, batch {args.batch_size}) on
{n_train} biased training renderings. Colour is easier to pick up than shape
and training is stopped early, so the model leans on colour.{noise_note}
Held-out and test labels are the clean shape class.

## Files

| file | size | content |
|------|------|---------|
| `model.onnx` | {size_model} | opset 17; input `image` float32 `[N, 3, 16, 16]` in [0, 1]; \
output `logits` float32 `[N, 2]` |
| `heldout.npz` | {size_heldout} | biased held-out split |
| `heldout_balanced.npz` | {size_heldout_bal} | group-balanced held-out split |
| `test.npz` | {size_test} | group-balanced test split |

Each `.npz` has `image` (float32, N x 3 x 16 x 16, fed to the model as is),
`labels` (int64) and `groups` (int64, `g = 2*y + c`). Group counts:

| file | g=0 | g=1 | g=2 | g=3 |
|------|-----|-----|-----|-----|
{counts}

## ERM accuracy of `model.onnx` (onnxruntime, %)

| split | N | mean | g=0 | g=1 | g=2 | g=3 | worst group |
|-------|---|------|-----|-----|-----|-----|-------------|
{rows[0]}
{rows[1]}
{rows[2]}

The model is accurate on the biased distribution (`heldout`) but much worse on
the minority groups g=1 and g=2, where colour points to the wrong class: it
leans on colour. (`heldout_balanced` comes from only 180 source scans, so its
per-group numbers are noisier than those on `test`.)

The head's input, i.e. the {args.embed_dim}-d ReLU embedding, is the tensor
`{embedding}`; the head is the last node of the graph
(`Gemm`, `transB=1`, output `logits`).

## Regenerate

```bash
python sample_models/make_colored_digits.py --seed {args.seed}
```

(needs numpy, scipy, scikit-learn, torch, onnx, onnxruntime; torch is only
needed for this script). Data generation is fully determined by the seed;
training runs on CPU with a fixed torch seed, so the same seed and library
versions reproduce the model. Other torch versions or CPUs may change the
trained weights slightly and with them the accuracies above. This copy was
built with {versions}.
"""
    (out / "README.md").write_text(text)


def human(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024**2 else f"{n / 1024**2:.2f} MiB"


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=here / "colored_digits")
    p.add_argument("--agree", type=float, default=0.9, help="P(colour agrees with label) in biased splits")
    p.add_argument("--label-noise", type=float, default=0.0, help="fraction of flipped training labels")
    p.add_argument("--train-copies", type=int, default=6, help="augmented copies per training source")
    p.add_argument("--heldout-copies", type=int, default=3, help="augmented copies per heldout source")
    p.add_argument("--max-shift", type=int, default=1)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--tint", type=float, default=0.0, help="strength of the non-dominant channels")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    print("building data ...")
    data = build_data(args)
    for name, d in data.items():
        print(f"  {name:17s} N={len(d['labels']):5d}  groups={np.bincount(d['groups'], minlength=4).tolist()}")

    print("training (ERM) ...")
    model = make_model(args.embed_dim)
    train(model, data["train"], args)

    onnx_path = out / "model.onnx"
    embedding = export(model, onnx_path)
    for name in ("heldout", "heldout_balanced", "test"):
        np.savez_compressed(out / f"{name}.npz", **data[name])

    results = {}
    for name in ("heldout", "heldout_balanced", "test"):
        d = data[name]
        logits = ort_logits(onnx_path, d["image"])
        with torch.no_grad():
            ref = model(torch.from_numpy(d["image"])).numpy()
        err = float(np.abs(logits - ref).max())
        assert np.allclose(logits, ref, atol=1e-4), f"onnxruntime != torch on {name}: max |diff| {err}"
        results[name] = accuracies(logits, d["labels"], d["groups"])
        r = results[name]
        print(
            f"  {name:17s} mean {100 * r['mean']:5.1f}  worst {100 * r['worst_group']:5.1f}  "
            f"per group {[round(100 * r['per_group'][g], 1) for g in range(4)]}  (ort vs torch max diff {err:.1e})"
        )

    import onnx
    import onnxruntime
    import scipy
    import sklearn

    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (np, scipy, sklearn, torch, onnx, onnxruntime))
    results["n_train"] = len(data["train"]["labels"])
    results["embedding"] = embedding
    sizes = {p.name: human(p.stat().st_size) for p in out.iterdir() if p.is_file()}
    write_readme(out, args, results, sizes, versions)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
