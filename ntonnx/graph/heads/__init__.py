"""Classifier heads: one small module per graph pattern, and :mod:`.locate` to find one.

Each pattern module (``gemm``, ``matmul``, ``conv``, ``matmul_integer``) matches one node shape and
reads/writes its weights; :mod:`.locate` walks back from a graph output through the post-ops and
asks the registry which pattern produced the logits. Import from here, not from the modules.
"""

from ntonnx.graph.heads.base import HeadSpec, head_activations
from ntonnx.graph.heads.locate import PATTERNS, locate_head, read_head, write_head
from ntonnx.graph.heads.postops import apply_post_ops
from ntonnx.graph.heads.scores import locate_head_or_scores

__all__ = [
    "PATTERNS",
    "HeadSpec",
    "apply_post_ops",
    "head_activations",
    "locate_head",
    "locate_head_or_scores",
    "read_head",
    "write_head",
]
