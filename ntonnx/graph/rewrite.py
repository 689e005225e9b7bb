"""Writing the tuned model: a copy of the input with only the head's parameters changed.

The head gets a fresh initializer where it shared one, a float head replaces a dynamically
quantized one, and ``metadata_props`` record what ntonnx did. Everything else (nodes, inputs,
outputs, opset, other metadata) is the input's; :mod:`ntonnx.graph.verify` proves it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx

from ntonnx.graph.heads import HeadSpec, write_head

METADATA_PREFIX = "ntonnx."


def tuned_model(
    model: onnx.ModelProto, head: HeadSpec, W: np.ndarray, b: np.ndarray, provenance: dict[str, object]
) -> onnx.ModelProto:
    """A copy of ``model`` whose head computes ``embedding @ W.T + b``, stamped with ``provenance``.

    Earlier ``ntonnx.*`` metadata entries (from tuning a tuned model) are replaced; all other
    metadata, inputs, outputs, opset and nodes are kept as they are.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    write_head(copy, head, W, b)
    kept = [(p.key, p.value) for p in copy.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del copy.metadata_props[:]
    for key, value in kept:
        copy.metadata_props.add(key=key, value=value)
    for key, value in provenance.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        copy.metadata_props.add(key=METADATA_PREFIX + key, value=text)
    return copy
