"""Shared fixtures: tiny generated models and the shipped sample model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data

SAMPLE = Path(__file__).resolve().parent.parent / "sample_models" / "colored_digits"


@pytest.fixture
def tiny(tmp_path):
    """Factory: write a tiny classifier and its data; returns (model_path, data_path, params)."""

    def make(**kwargs):
        model, params = tiny_classifier(**kwargs)
        name = "_".join(f"{k}-{v}" for k, v in sorted(kwargs.items())) or "default"
        model_path = tmp_path / f"{name}.onnx"
        data_path = tmp_path / f"{name}.npz"
        onnx.save(model, model_path)
        np.savez(data_path, **tiny_data(params))
        return model_path, data_path, params

    return make


@pytest.fixture(scope="session")
def sample() -> dict[str, Path]:
    """The shipped colored-digits sample: model, biased held-out set, balanced test set."""
    paths = {
        "model": SAMPLE / "model.onnx",
        "heldout": SAMPLE / "heldout.npz",
        "test": SAMPLE / "test.npz",
    }
    for path in paths.values():
        assert path.exists(), f"shipped sample file {path} is missing"
    return paths


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
