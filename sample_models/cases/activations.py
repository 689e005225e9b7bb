"""Extract a built case's activations once, for research on embeddings without re-running ONNX.

``export(case_dir, dest)`` writes, under ``dest``:

``<split>.npz``   :meth:`ntonnx.Activations.save` output for every split (embeddings, logits,
                  labels, groups), readable by ``ntonnx tune --activations``
``head.npz``      the exported head's ``W`` of shape (n_logits, dim) and ``b`` of shape (n_logits,)
``case.json``     the case's manifest, plus the head's location and shapes
``READY``         written last: everything above is complete (removed first when re-extracting, which overwrites)

::

    python -m sample_models.cases extract cmnist --acts /work/cache/acts
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sample_models.cases.common import SPLITS


def export(case_dir: Path, dest: Path, log=print) -> Path:
    """Extract every split of the case in ``case_dir`` into ``dest``; returns ``dest``."""
    import ntonnx
    from ntonnx.graph.heads import read_head
    from ntonnx.graph.model_io import load_model

    case_dir, dest = Path(case_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ready = dest / "READY"
    ready.unlink(missing_ok=True)
    model = case_dir / "model.onnx"
    shapes = {}
    for split in SPLITS:
        acts = ntonnx.extract(model, case_dir / f"{split}.npz", save_to=dest / f"{split}.npz", force=True)
        shapes[split] = list(acts.embeddings.shape)
        log(f"  {case_dir.name}/{split}: embeddings {acts.embeddings.shape}, logits {acts.logits.shape}")
    head = ntonnx.inspect_model(model).head
    W, b = read_head(load_model(model).proto, head)
    np.savez(dest / ".head.tmp.npz", W=W.astype(np.float32), b=b.astype(np.float32))
    os.replace(dest / ".head.tmp.npz", dest / "head.npz")
    manifest = json.loads((case_dir / "case.json").read_text())
    manifest["activations"] = {
        "model": str(model.resolve()),
        "head": {"pattern": head.pattern, "embedding": head.embedding, "dim": head.dim, "n_logits": head.n_classes},
        "W_shape": list(W.shape),
        "embeddings_shape": shapes,
    }
    (dest / ".case.json.tmp").write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(dest / ".case.json.tmp", dest / "case.json")
    ready.touch()
    return dest
