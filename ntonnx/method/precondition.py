"""A Kronecker-factored change of variables for the head solve, and the gate that decides to use it.

L-BFGS needs many passes over the embeddings when they are correlated (real CNN features are:
their Gram matrix has a few large eigenvalues and a long tail), because its implicit Hessian
starts as the identity and learns the curvature only a few directions per iteration. The Hessian
of the weighted softmax cross-entropy in the head weights ``Θ`` (shape ``(K, p)``) is

    H = Σ_i w_i (diag(p_i) - p_i p_iᵀ) ⊗ z_i z_iᵀ,

which is close to a Kronecker product ``A ⊗ G``: a ``K x K`` softmax-curvature factor ``A`` times
a curvature-weighted Gram ``G`` of the (standardised) embeddings. Both are estimated once, at the
warm start, from a seeded subsample of rows (one float32 SYRK and two Cholesky factorisations),
and L-BFGS then runs on ``U`` with ``Θ = Θ0 + A^{-1/2} U G^{-1/2}`` (Cholesky square roots), where
the problem is close to isotropic. The map is linear, so the optimum and the objective are those
of the plain problem; only the path changes.

When the embeddings are nearly uncorrelated, or the classes are separated so that the curvature
sits on a few samples, ``G`` estimated from a subsample is mostly noise and the change of variables
costs more than it saves. The Ledoit-Wolf shrinkage weight of ``G`` towards a scaled identity
measures exactly that (near 1: noise; near 0: structure), so it is the gate, together with a
minimum number of rows per column (with fewer, most directions carry no data curvature at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Rows of the subsample the curvature factors are estimated from.
SAMPLE_ROWS = 1024
#: Above this Ledoit-Wolf shrinkage weight the Gram estimate is mostly noise: solve unpreconditioned.
#: Measured weights at 1024 rows: 0.9997-0.9999 on uncorrelated ReLU features (where the change of
#: variables cost 1.2-1.9x the time), 0.03-0.13 on correlated synthetic ones and 0.64 on real
#: EfficientNet-Lite0 embeddings of 10,000 images (327 -> 107 iterations, 3.2 -> 1.7 s, to 1e-6 of
#: the same loss); it was 0.5 until that last case showed the gap between 0.5 and 0.9998 untested.
GATE_SHRINKAGE = 0.8
#: Rows of the cheap first look: the gate first estimates the shrinkage from this many of the
#: sampled rows (a SYRK 16x cheaper at 2048 columns) and declines at once above
#: ``PRE_GATE_SHRINKAGE``. The noise term of the estimate scales as 1 / rows, so a weight ``s`` at
#: 256 rows predicts ``s / (4 - 3 s)`` at 1024: 0.97 at 256 rows stands for about 0.89 at 1024, above
#: ``GATE_SHRINKAGE``; nearly uncorrelated embeddings (0.994-0.995 at 256 rows) stop here.
PRE_GATE_ROWS = 256
PRE_GATE_SHRINKAGE = 0.97
#: Below this many rows per weight column the gate also declines: on real EfficientNet embeddings
#: with about as many rows as columns (1,000-1,200 x 1,280) the change of variables took 1.2-1.3x
#: the iterations (its ridge split over-damps the many directions without data); it won from 7.8
#: rows per column up (real 1280-d and 64-d embeddings, synthetic 512- and 2048-d). Between, untested.
GATE_ROWS_PER_COLUMN = 4
#: Damping floor relative to the mean eigenvalue of each factor (keeps Cholesky defined when l2 = 0).
_DAMPING_FLOOR = 1e-6


@dataclass
class KroneckerMap:
    """The change of variables ``Θ = Θ0 + L_A^{-T} U L_G^{-1}``, applied with triangular solves.

    Attributes
    ----------
    chol_a : ndarray of shape (n_logits, n_logits), lower Cholesky factor of the damped ``A``.
    chol_g : ndarray of shape (n_params, n_params), lower Cholesky factor of the damped, shrunk ``G``.
    shrinkage : the Ledoit-Wolf weight of ``G`` towards a scaled identity (the gate's statistic).
    """

    chol_a: np.ndarray
    chol_g: np.ndarray
    shrinkage: float

    def weights(self, u: np.ndarray) -> np.ndarray:
        """``L_A^{-T} U L_G^{-1}`` for ``U`` of shape (n_logits, n_params): the step in head weights."""
        from scipy.linalg import solve_triangular

        right = solve_triangular(self.chol_g, u.T, lower=True, trans="T", check_finite=False).T
        return solve_triangular(self.chol_a, right, lower=True, trans="T", check_finite=False)

    def gradient(self, grad: np.ndarray) -> np.ndarray:
        """The gradient in ``U`` (``L_A^{-1} grad L_G^{-T}``) of one in head weights, same shape."""
        from scipy.linalg import solve_triangular

        right = solve_triangular(self.chol_g, grad.T, lower=True, check_finite=False).T
        return solve_triangular(self.chol_a, right, lower=True, check_finite=False)


def sample_rows(n: int, rows: int = SAMPLE_ROWS, seed: int = 0) -> np.ndarray:
    """A sorted, seeded choice of at most ``rows`` row indices out of ``n`` (all rows when ``n`` is small)."""
    if n <= rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=rows, replace=False))


@dataclass
class CurvatureFactors:
    """The two Kronecker factors of the Hessian at the warm start, before damping.

    Attributes
    ----------
    softmax : ndarray of shape (n_logits, n_logits), ``Σ w_i (diag(p_i) - p_i p_iᵀ)`` (weights sum to 1).
    gram : ndarray of shape (n_params, n_params), the curvature-weighted Gram, Ledoit-Wolf shrunk.
    shrinkage : the Ledoit-Wolf weight (near 1: the Gram is noise and the gate rejects the change).
    """

    softmax: np.ndarray
    gram: np.ndarray
    shrinkage: float


def curvature_factors(
    z: np.ndarray, probs: np.ndarray, weight: np.ndarray, *, single_logit: bool
) -> CurvatureFactors | None:
    """Estimate the curvature factors from a subsample; None when the warm start leaves no curvature.

    Parameters
    ----------
    z : ndarray of shape (n_rows, n_params), standardised embeddings of the subsample, with a column
        of ones last when the head has an intercept.
    probs : ndarray of shape (n_rows, n_logits) (or (n_rows, 2) for a single-logit head), the
        warm start's softmax probabilities on those rows.
    weight : ndarray of shape (n_rows,), the sample weights of those rows.
    single_logit : the head has one logit (``probs`` are ``[1 - p, p]``).
    """
    weight = weight / weight.sum()
    if single_logit:
        curvature = probs[:, 1] * probs[:, 0]
        softmax = np.array([[weight @ curvature]])
    else:
        curvature = 1.0 - np.einsum("ij,ij->i", probs, probs)
        weighted = probs * weight[:, None]
        softmax = np.diag(weighted.sum(axis=0)) - weighted.T @ probs
    omega = weight * curvature
    if not omega.sum() > 0:  # the warm start separates the subsample: no curvature to estimate
        return None
    gram, shrinkage = _shrunk_gram(z, omega / omega.sum())
    return CurvatureFactors(softmax=softmax, gram=gram, shrinkage=shrinkage)


def kronecker_map(factors: CurvatureFactors, damping: float) -> KroneckerMap | None:
    """The change of variables for ``factors`` with the ridge ``damping``; None if it cannot be factored.

    The ridge is split between the factors as in K-FAC, ``(A + π√λ I) ⊗ (G + √λ/π I)`` with
    ``π² = mean eig(A) / mean eig(G)``, so that the identity the ridge adds is matched on both sides.
    """
    a, gram = factors.softmax.copy(), factors.gram.copy()
    mean_a, mean_g = np.trace(a) / len(a), np.trace(gram) / len(gram)
    if not (mean_a > 0 and mean_g > 0):
        return None
    pi = np.sqrt(mean_a / mean_g)
    root = np.sqrt(damping)
    a[np.diag_indices_from(a)] += max(pi * root, _DAMPING_FLOOR * mean_a)
    gram[np.diag_indices_from(gram)] += max(root / pi, _DAMPING_FLOOR * mean_g)
    try:
        chol_a = np.linalg.cholesky(a)
        chol_g = np.linalg.cholesky(gram.astype(np.float32)).astype(np.float64)
    except np.linalg.LinAlgError:
        return None
    if not (np.isfinite(chol_a).all() and np.isfinite(chol_g).all()):
        return None
    return KroneckerMap(chol_a=chol_a, chol_g=chol_g, shrinkage=factors.shrinkage)


def _shrunk_gram(z: np.ndarray, omega: np.ndarray) -> tuple[np.ndarray, float]:
    """The ``omega``-weighted Gram of the rows of ``z``, shrunk towards ``tr/p · I`` by Ledoit-Wolf.

    Returns the shrunk Gram of shape (n_params, n_params), float64, and the shrinkage weight. The
    weighted Ledoit-Wolf numerator ``Σ ω_i² ||z_i z_iᵀ - S||²`` uses ``Σ ω_i² z_iᵀ S z_i ≈ Σ ω_i² ||S||²``
    (exact for equal weights), which spares a second product of the size of the Gram.
    """
    scaled = np.ascontiguousarray((z * np.sqrt(omega)[:, None]).astype(np.float32))
    gram = (scaled.T @ scaled).astype(np.float64)  # one SYRK
    p = len(gram)
    mean = np.trace(gram) / p
    frob = np.sum(gram * gram)
    dispersion = frob - 2 * mean * np.trace(gram) + mean * mean * p  # ||S - mean I||²
    norms = np.einsum("ij,ij->i", z, z)
    noise = omega**2 @ norms**2 - np.sum(omega**2) * frob
    shrinkage = float(np.clip(noise / dispersion, 0.0, 1.0)) if dispersion > 0 else 1.0
    gram *= 1.0 - shrinkage
    gram[np.diag_indices_from(gram)] += shrinkage * mean
    return gram, shrinkage
