"""The import rules of ARCHITECTURE.md, checked: stages import only the stages below them.

Layers, bottom up: the base modules (errors, options, files, activations), ``data``, then
``graph`` and ``method`` side by side (neither imports the other), then ``session``, ``api`` and
the package. ``method`` and ``data`` must also run without onnx and onnxruntime installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ntonnx"

#: Lowest layer first. A module may import modules of its own layer or lower ones.
LAYERS: list[tuple[str, ...]] = [
    ("ntonnx.errors", "ntonnx._version", "ntonnx.options"),
    ("ntonnx.files",),
    ("ntonnx.activations",),
    ("ntonnx.data",),
    ("ntonnx.graph", "ntonnx.method"),
    ("ntonnx.session",),
    ("ntonnx.api",),
    ("ntonnx",),
]
#: Packages of the same layer that must not import each other.
APART = [("ntonnx.graph", "ntonnx.method")]


def _unit(module: str) -> str:
    """The layer entry a module belongs to (its longest matching prefix)."""
    matches = [u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    return max(matches, key=len)


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def _imports(path: Path, module: str) -> set[str]:
    """Every ntonnx module ``path`` imports, at the top or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names.add(base)
    return {n for n in names if n == "ntonnx" or n.startswith("ntonnx.")}


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_module_imports_upward_or_across(module, path):
    unit = _unit(module)
    for imported in _imports(path, module):
        if imported == "ntonnx" and module != "ntonnx":
            pytest.fail(f"{module} imports the package itself (import the defining module instead)")
        target = _unit(imported)
        assert _layer(target) <= _layer(unit), f"{module} imports {imported}, a higher layer"
        for a, b in APART:
            assert {unit, target} != {a, b}, f"{module} imports {imported}: {a} and {b} stay apart"


def test_method_and_data_run_without_onnx_or_onnxruntime():
    code = """
import sys
sys.modules["onnx"] = None
sys.modules["onnxruntime"] = None
import importlib, pkgutil
import ntonnx.data, ntonnx.method
for package in (ntonnx.data, ntonnx.method):
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
from ntonnx.method.registry import method_names
assert "neurontune" in method_names()
leaked = sorted(m for m in sys.modules if m.startswith("ntonnx.graph"))
assert not leaked, leaked
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr


def test_every_package_is_installed():
    """pyproject lists packages explicitly (the CLI folder installs under another name): none may be missing."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert on_disk <= listed
    assert config["package-dir"]["ntonnx_cli"] == "cli" and "ntonnx_cli" in listed
