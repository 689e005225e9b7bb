"""The benchmark cases' group helpers: multi-valued attributes, binary cases unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from sample_models.cases.common import balanced_attribute, biased_attribute, groups_of


def _binary_biased_before(labels: np.ndarray, agree: float, rng: np.random.Generator) -> np.ndarray:
    """The binary-only helper the existing cases were built with."""
    flip = rng.random(len(labels)) >= agree
    return np.where(flip, 1 - labels, labels).astype(np.int64)


def _binary_balanced_before(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    attribute = np.zeros(len(labels), dtype=np.int64)
    for y in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == y))
        attribute[members[: len(members) // 2]] = 1
    return attribute


@pytest.mark.parametrize("n", [7, 800, 1201])
def test_binary_attributes_and_random_stream_are_unchanged(n: int) -> None:
    labels = np.random.default_rng(n).integers(0, 2, n)
    old, new = np.random.default_rng(1), np.random.default_rng(1)
    np.testing.assert_array_equal(biased_attribute(labels, 0.9, new), _binary_biased_before(labels, 0.9, old))
    np.testing.assert_array_equal(balanced_attribute(labels, new), _binary_balanced_before(labels, old))
    assert new.random() == old.random()  # later splits of a case draw the same numbers
    np.testing.assert_array_equal(groups_of(labels, labels), 3 * labels)


def test_multi_valued_balanced_attribute_fills_every_cell_equally() -> None:
    labels = np.repeat(np.arange(5), 60)
    attribute = balanced_attribute(labels, np.random.default_rng(0), n_values=5)
    groups = groups_of(labels, attribute, n_values=5)
    np.testing.assert_array_equal(np.bincount(groups, minlength=25), np.full(25, 12))
    np.testing.assert_array_equal(groups // 5, labels)


def test_multi_valued_biased_attribute_agrees_at_rate_and_spreads_the_rest() -> None:
    labels = np.repeat(np.arange(4), 5000)
    attribute = biased_attribute(labels, 0.8, np.random.default_rng(0), n_values=4)
    assert abs(np.mean(attribute == labels) - 0.8) < 0.01
    for y in range(4):
        others = np.bincount(attribute[(labels == y) & (attribute != y)], minlength=4)
        assert others[y] == 0
        assert np.all(np.abs(np.delete(others, y) / others.sum() - 1 / 3) < 0.05)
