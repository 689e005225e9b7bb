"""The method registry: every module of :mod:`ntonnx.method` that defines ``METHOD`` is a ``--method``.

Adding a method is adding one module (plus its test): the CLI's choices and help, the option
check and the pipeline's needs all come from the :class:`~ntonnx.method.base.Method` it defines.
The checks every method shares (a class missing from the tuning data, group labels a reference
method needs) are made here, once, before the model runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import numpy as np

from ntonnx.activations import n_label_classes
from ntonnx.errors import DataError, UsageError
from ntonnx.method.base import Method

#: Listed first in help and docs; the rest follow alphabetically.
_ORDER = ("neurontune", "llr", "dfr", "afr", "erm", "auto")


@cache
def _registry() -> dict[str, Method]:
    import ntonnx.method as package

    found: dict[str, Method] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        method = getattr(module, "METHOD", None)
        if isinstance(method, Method):
            found[method.name] = method
    ordered = [name for name in _ORDER if name in found] + sorted(set(found) - set(_ORDER))
    return {name: found[name] for name in ordered}


def method_names() -> tuple[str, ...]:
    """Every registered method's name, in documentation order."""
    return tuple(_registry())


def get_method(name: str) -> Method:
    """The method called ``name``, or a :class:`UsageError` listing the choices."""
    registry = _registry()
    if name not in registry:
        raise UsageError(f"--method must be one of {', '.join(registry)}, got {name!r}")
    return registry[name]


def method_help() -> str:
    """``--method``'s help text: each method's one-line summary."""
    return "; ".join(f"{m.name}: {m.summary}" for m in _registry().values()) + "."


def check_tuning_data(
    method: Method, labels: np.ndarray, groups: np.ndarray | None, n_logits: int, source: str
) -> None:
    """Fail before the model runs if the data the head is re-fit on cannot serve ``method``.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), the tuning data's classes.
    groups : ndarray of shape (n_samples,) or None, its group labels.
    n_logits : the head's output count.
    source : how to name the data in messages.
    """
    if method.needs_groups and groups is None:
        raise UsageError(f"--method {method.name} needs group labels: data '{source}' has none")
    if not method.refits:
        return
    missing = np.setdiff1d(np.arange(n_label_classes(n_logits)), labels)
    if missing.size:
        raise DataError(
            f"data '{source}' has no samples of class(es) {missing.tolist()}; re-fitting the head "
            "needs samples of every class the model predicts"
        )
