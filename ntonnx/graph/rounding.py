"""How far a runtime's floating-point result may lie from the exact one: verification's tolerances.

Verification compares onnxruntime's logits with ``pool(e) @ W.T + b`` computed in float64, and the
graph output with the post-ops applied to those. A fixed tolerance is wrong both ways: 1e-5 on
probabilities refused a correct rewrite of PaddleOCR's classifier (its logits were large, and a
float32 logit of 150 is only known to ~1e-5), while 1e-5 relative to the largest logit lets a
wrong small logit through. So every element gets its own bound from the magnitudes it was computed
from, in the precision it was computed in:

* a logit: ``2 u (|z| + |b|)`` for rounding the product and the sum to the output type, plus
  ``2 sqrt(n) u M`` for accumulating ``M = |e| @ |W|.T + |b|`` over ``n`` terms (the
  random-walk size of the rounding errors of a length-``n`` sum, which ordering, blocking and FMA
  only make smaller; onnxruntime's CPU kernels stay below 0.3 of it for n = 9..4097). float16
  logits accumulate in float32 (as onnxruntime's CPU kernels do) but may round products and
  partial results to float16: ``2 u16 M + 2 sqrt(n) u32 M`` (CPU: below 0.5 of it). CUDA has not
  been measured; its TF32 products (10-bit mantissa) would exceed it, so verification turns them off;
* a post-op's output: the logits' bound carried through it (Softmax:
  ``p_j (exp(t_j + max t) - 1)``; Sigmoid: the image of ``[z - t, z + t]``; ...), plus the
  post-op's own rounding.

``u`` is the unit roundoff of the tensor's type.
"""

from __future__ import annotations

import numpy as np

#: Post-ops that do not change values (their bound passes through unchanged).
_PASS_THROUGH = frozenset({"Identity", "Flatten", "Reshape", "Squeeze"})


def unit_roundoff(dtype: np.dtype | str) -> float:
    """Half the machine epsilon of ``dtype`` (float32 for anything that is not a float type)."""
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype if dtype.kind == "f" else np.float32).eps) / 2


def logit_bounds(
    logits: np.ndarray, magnitude: np.ndarray, bias: np.ndarray, *, terms: int, dtype: np.dtype | str
) -> np.ndarray:
    """Largest error a runtime may make on each of ``logits`` (computed exactly in float64).

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes), the exact ``pool(e) @ W.T + b``.
    magnitude : ndarray of shape (n_samples, n_classes), ``pool(|e|) @ |W|.T + |b|``.
    bias : ndarray of shape (n_classes,), ``b``.
    terms : number of terms each logit sums (embedding width, plus the positions a pooling averages).
    dtype : type the graph computes the logits in.

    Returns
    -------
    bounds : ndarray of shape (n_samples, n_classes)
    """
    u = unit_roundoff(dtype)
    if np.dtype(dtype).itemsize < 4:  # float32 accumulation, but products and partial results may round to dtype
        per_magnitude = 2 * u + 2 * np.sqrt(terms + 1) * unit_roundoff(np.float32)
    else:
        per_magnitude = 2 * np.sqrt(terms + 1) * u
    floor = np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float32).tiny
    return 2 * u * (np.abs(logits) + np.abs(bias)) + per_magnitude * magnitude + floor


def output_bounds(
    logits: np.ndarray, bounds: np.ndarray, post_ops: list[str], *, dtype: np.dtype | str, logits_dtype: np.dtype | str
) -> np.ndarray | None:
    """The bound of each element of the graph output, given the logits' ``bounds``.

    ``logits`` (exact) and ``bounds`` have shape (n_samples, n_classes); ``post_ops`` are those of
    :func:`ntonnx.graph.heads.apply_post_ops`, whose result the output is compared with; ``dtype`` is the
    output's type and ``logits_dtype`` the logits' (the post-ops round in the coarser of the two).
    None where that function models no values (ZipMap, QDQ).
    """
    u = max(unit_roundoff(dtype), unit_roundoff(logits_dtype))
    floor = np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float32).tiny
    scores = np.asarray(logits, np.float64).reshape(len(logits), -1)
    bound = np.asarray(bounds, np.float64).reshape(scores.shape)
    for op in post_ops:
        if op in ("Softmax", "LogSoftmax"):
            top = scores.max(axis=1, keepdims=True)
            shifted = scores - top
            log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            worst = bound + bound.max(axis=1, keepdims=True)  # z_j moves by t_j, the normaliser by max t
            # the runtime's own rounding: of z - max (relative to exp), of the sum of exps, of the result
            own = u * (4 + 2 * np.abs(shifted) + 2 * scores.shape[1])
            if op == "Softmax":
                scores = np.exp(shifted - log_sum)
                with np.errstate(over="ignore", invalid="ignore"):  # a bound past exp's range allows anything
                    bound = scores * (np.expm1(worst) + own) + 2 * u  # exp approximations: ~u absolute
                bound = np.where(np.isnan(bound), np.inf, bound)
            else:
                scores = shifted - log_sum
                bound = worst + u * (4 * np.abs(scores) + 2 * np.abs(top) + 2 * log_sum) + own
        elif op == "Sigmoid":
            high, low = _sigmoid(scores + bound), _sigmoid(scores - bound)
            scores = _sigmoid(scores)
            # onnxruntime's logistic is a rational approximation, accurate to a few u absolute (not relative)
            bound = np.maximum(high - scores, scores - low) + 4 * u
        elif op == "BinaryProba":
            scores = np.hstack([1.0 - scores, scores])
            bound = np.hstack([bound, bound]) + u
        elif op == "BinaryScores":
            scores, bound = np.hstack([-scores, scores]), np.hstack([bound, bound])
        elif op == "PositiveColumn":
            scores, bound = scores[:, 1:2], bound[:, 1:2]
        elif op in ("NormalizeL1", "NormalizeL2"):
            # y = s / |s|: the norm moves by at most sum(t), each y_j by (t_j + |y_j| sum(t)) / (|s| - sum(t))
            norm = np.abs(scores).sum(axis=1, keepdims=True) if op == "NormalizeL1" else None
            if norm is None:
                norm = np.sqrt((scores**2).sum(axis=1, keepdims=True))
            moved = bound.sum(axis=1, keepdims=True)
            scores = scores / norm
            slack = np.where(norm > moved, norm - moved, 0.0)
            with np.errstate(divide="ignore"):
                bound = np.where(slack > 0, (bound + np.abs(scores) * moved) / slack, np.inf)
            bound = bound + u * (scores.shape[1] + 2) * np.abs(scores)
        elif op == "Cast":
            bound = bound + u * np.abs(scores)  # a cast to a narrower type rounds
        elif op not in _PASS_THROUGH:
            return None
    return bound + u * np.abs(scores) + floor


def worst_excess(got: np.ndarray, expected: np.ndarray, bounds: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """The largest ``|got - expected| / bound`` (<= 1 passes) and the index where it is reached.

    NaN in ``got`` counts as infinitely far.
    """
    error = np.abs(np.asarray(got, np.float64).reshape(expected.shape) - expected)
    ratio = np.where(np.isnan(error), np.inf, error / bounds)
    if ratio.size == 0:
        return 0.0, ()
    where = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return float(ratio[where]), tuple(int(i) for i in where)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|
