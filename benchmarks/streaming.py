"""Peak memory of extracting activations from an image folder: streaming, not the whole data set.

Generates N seeded 224x224 JPEG images in a cache folder (10 class folders; reused on later runs),
builds a small CNN classifier with onnx.helper (3 stride-2 convolutions, global pool, Gemm head),
and runs ``ntonnx.extract`` over the folder with the ImageNet preset. Each measurement runs in a
fresh process, so one cannot inherit another's allocations:

* ``model``: peak resident memory the onnxruntime session costs, including its work memory
  (session created and run on batches of the sizes the extraction feeds, of synthetic input;
  the batch itself is allocated before the baseline);
* ``extract``: the peak resident memory (kernel high-water mark, reset after imports) of the
  full extraction, and its wall time;
* ``decode``: the time to only decode and preprocess every batch (no model), to show the model
  run and the decoding overlap.

The claim checked: peak extra memory < embeddings + logits + 2 batches + model. Run::

    python benchmarks/streaming.py            # N = 20000
    python benchmarks/streaming.py --n 2000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIZE = 224
CLASSES = 10
EMBEDDING = 64


def generate(root: Path, n: int, seed: int) -> Path:
    """N smooth random JPEGs (small files, realistic decode cost), N/10 per class folder."""
    from PIL import Image

    marker = root / f".complete-{n}-{seed}"
    if marker.exists():
        return root

    def one(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        image.save(root / f"class{i % CLASSES}" / f"{i:06d}.jpg", quality=90)

    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, range(n)))
    marker.touch()
    return root


def build_model(path: Path) -> Path:
    """A small CNN: 3x(Conv stride 2 + Relu) -> GlobalAveragePool -> Flatten -> Gemm (10 classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    channels = [3, 16, 32, EMBEDDING]
    nodes, inits, previous = [], [], "image"
    for i in range(3):
        weight = rng.normal(0, 0.2, (channels[i + 1], channels[i], 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"conv{i}.weight"))
        nodes.append(
            helper.make_node("Conv", [previous, f"conv{i}.weight"], [f"c{i}"], strides=[2, 2], pads=[1, 1, 1, 1])
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [previous], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"]))
    inits.append(numpy_helper.from_array(rng.normal(size=(CLASSES, EMBEDDING)).astype(np.float32), "fc.weight"))
    inits.append(numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["embedding", "fc.weight", "fc.bias"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def stage(name: str, model: Path, images: Path, n: int, batch_size: int, workers: int | None) -> dict:
    """One measurement, in this (fresh) process."""
    import onnxruntime  # noqa: F401 - imports are not part of what is measured
    from PIL import Image  # noqa: F401

    import ntonnx

    options = ntonnx.DataOptions(preset="imagenet", workers=workers)
    run = ntonnx.RunOptions(provider="cpu", batch_size=batch_size)
    if name == "model":
        # The model's cost is the session plus onnxruntime's work memory, whose arena grows with
        # the runs: run it on the very batch sizes the extraction feeds, with synthetic pixels.
        session = ntonnx.Session(model, run=run, data_options=options)
        batch = np.ones((batch_size, 3, SIZE, SIZE), np.float32)  # the batch itself is not the model's
        baseline = _status("VmRSS")
        _reset_peak()
        runner = session.runner
        for size in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
            runner.session.run(runner.output_names, {"image": batch[:size]})
        return {"model_bytes": _status("VmHWM") - baseline}
    if name == "decode":
        session = ntonnx.Session(model, run=run, data_options=options)
        dataset = session.open_data(images)
        start = time.perf_counter()
        count = sum(len(batch["image"]) for batch in dataset.batches(batch_size))
        return {"decode_s": time.perf_counter() - start, "n": count}
    baseline = _status("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    acts = ntonnx.extract(model, images, data_options=options, run=run)
    elapsed = time.perf_counter() - start
    return {
        "extract_s": elapsed,
        "peak_extra_bytes": _status("VmHWM") - baseline,
        "n": len(acts),
        "embeddings_bytes": acts.embeddings.nbytes + acts.logits.nbytes + acts.labels.nbytes,
    }


def _child(name: str, args: argparse.Namespace, model: Path, images: Path) -> dict:
    command = [sys.executable, __file__, "--stage", name, "--model", str(model), "--images", str(images)]
    command += ["--n", str(args.n), "--batch-size", str(args.batch_size)] + (
        ["--workers", str(args.workers)] if args.workers else []
    )
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: ntonnx's)")
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ntonnx-benchmarks"
    parser.add_argument("--cache", type=Path, default=default_cache, help="where generated images are kept")
    parser.add_argument("--stage", choices=["model", "extract", "decode"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(stage(args.stage, args.model, args.images, args.n, args.batch_size, args.workers)))
        return

    start = time.perf_counter()
    images = generate(args.cache / f"streaming-{args.n}-{args.seed}", args.n, args.seed)
    generated_s = time.perf_counter() - start
    on_disk = sum(f.stat().st_size for f in images.rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "cnn.onnx")
        model_file = model.stat().st_size
        model_memory = _child("model", args, model, images)["model_bytes"]
        extract = _child("extract", args, model, images)
        decode = _child("decode", args, model, images)
    batch_bytes = args.batch_size * 3 * SIZE * SIZE * 4
    budget = extract["embeddings_bytes"] + 2 * batch_bytes + model_memory
    mib = 1 << 20
    rows = [
        (
            "images",
            f"{extract['n']} x {SIZE}x{SIZE} JPEG ({on_disk / mib:.0f} MiB on disk; generated in {generated_s:.0f} s)",
        ),
        ("whole set as float32 tensors", f"{extract['n'] * 3 * SIZE * SIZE * 4 / mib:,.0f} MiB"),
        ("embeddings + logits + labels", f"{extract['embeddings_bytes'] / mib:.1f} MiB"),
        ("one batch", f"{batch_bytes / mib:.1f} MiB (batch size {args.batch_size})"),
        (
            "model (session + work memory)",
            f"{model_memory / mib:.1f} MiB (file {model_file / 1024:.0f} KiB)",
        ),
        ("budget: embeddings + 2 batches + model", f"{budget / mib:.1f} MiB"),
        ("peak extra memory during extract", f"{extract['peak_extra_bytes'] / mib:.1f} MiB"),
        ("of which the data pipeline (peak - model)", f"{(extract['peak_extra_bytes'] - model_memory) / mib:.1f} MiB"),
        ("extract wall time", f"{extract['extract_s']:.1f} s ({extract['n'] / extract['extract_s']:.0f} images/s)"),
        ("decode + preprocess only", f"{decode['decode_s']:.1f} s"),
        ("cpu cores", str(os.cpu_count())),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    verdict = "below" if extract["peak_extra_bytes"] < budget else "ABOVE"
    print(f"peak is {verdict} the budget ({extract['peak_extra_bytes'] / budget:.0%} of it)")


if __name__ == "__main__":
    main()
