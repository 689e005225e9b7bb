"""The seeded, class-stratified split that gives one held-out file both NeuronTune roles.

With a single labelled file, half of every class (rounded down, at least one sample where the
class has two or more) identifies the spurious neurons and the rest tunes the head, so the head is
never re-fit on the very mistakes that chose the neurons. Stratifying by class keeps the class
balance of both halves; group labels are never consulted.
"""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (identification, tuning), each sorted.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
    fraction : share of each class that goes to the identification part.
    seed : seed of the shuffle; the same labels and seed give the same split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    first, second = [], []
    for y in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == y))
        cut = int(len(members) * fraction)
        if len(members) >= 2:
            cut = min(max(cut, 1), len(members) - 1)
        first.append(members[:cut])
        second.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
