"""The class names a model file carries itself, so the report and the class-order check can use them.

Exporters keep them in different places:

* ``ai.onnx.ml`` classifiers (skl2onnx's ``LinearClassifier``, ``TreeEnsembleClassifier``,
  ``SVMClassifier``, and the ``ZipMap`` after them) hold ``classlabels_strings`` or
  ``classlabels_int64s`` attributes;
* ``metadata_props`` entries written by training frameworks: ``id2label`` (Hugging Face config, a
  JSON object ``{"0": "neg", ...}``), ``names`` (Ultralytics, a Python dict literal
  ``{0: 'person', ...}``), ``labels``/``classes``/``class_names`` (a JSON list or a comma-separated
  string), ``character`` (PaddleOCR, one name per line).

The first source that gives names for ``n_classes`` classes wins; anything else (wrong count,
indices with gaps, unparsable text) is ignored with a debug log, never an error: the names are a
convenience and the data's labels stay authoritative.
"""

from __future__ import annotations

import ast
import json
import logging

import onnx

logger = logging.getLogger("ntonnx")

#: metadata keys tried in this order.
METADATA_KEYS = ("id2label", "names", "labels", "classes", "class_names", "character")


def graph_class_names(model: onnx.ModelProto, n_classes: int | None = None) -> list[str] | None:
    """The model's class names in output order, or None when the file has none (or not ``n_classes``).

    Parameters
    ----------
    model : the loaded model (not modified).
    n_classes : the head's number of classes, if known; names of another count are ignored
        (a single-logit binary head has 2 classes).
    """
    candidates: list[tuple[str, list[str] | None]] = []
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                candidates.append((f"{node.op_type} {attribute.name}", [s.decode("utf-8") for s in attribute.strings]))
            elif attribute.name == "classlabels_int64s" and attribute.ints:
                candidates.append((f"{node.op_type} {attribute.name}", [str(i) for i in attribute.ints]))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    for key in METADATA_KEYS:
        if key in metadata:
            candidates.append((f"metadata '{key}'", parse_names(metadata[key], key)))
    for where, names in candidates:
        if names is None:
            logger.debug("class names in %s could not be read", where)
        elif n_classes is not None and len(names) != n_classes:
            logger.debug("%s names %d classes, the head has %d: not used", where, len(names), n_classes)
        else:
            logger.debug("class names from %s: %d names", where, len(names))
            return names
    return None


def parse_names(text: str, key: str = "") -> list[str] | None:
    """Names from a metadata value: JSON list or index->name object, Python dict literal, or a list.

    ``key == "character"`` reads one name per line (PaddleOCR's convention); other plain text is
    split on commas (or on line breaks when it has no comma).
    """
    text = text.strip()
    if not text:
        return None
    value = None
    if text[0] in "[{":
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
        if value is None:
            return None
    elif key == "character" or "," not in text:
        value = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        value = [part.strip() for part in text.split(",")]
    if isinstance(value, dict):
        return _indexed(value)
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return [str(v) for v in value]
    return None


def _indexed(value: dict) -> list[str] | None:
    """``{"0": "a", "1": "b"}`` or ``{0: "a", 1: "b"}`` as ``["a", "b"]``; None unless indices are 0..n-1."""
    try:
        items = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        return None
    if sorted(items) != list(range(len(items))):
        return None
    return [items[i] for i in range(len(items))]
