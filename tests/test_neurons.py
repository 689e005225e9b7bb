"""NeuronTune's scores and selection rules on examples small enough to check by hand."""

import numpy as np
import pytest

from ntonnx.method.neurons import select_spurious, spuriousness_scores

# Class 0: samples 0-2 right, 3-4 wrong. Class 1: samples 5-6 right, 7 wrong.
EMBEDDINGS = np.array(
    [
        # n0   n1   n2
        [1.0, 5.0, 0.0],
        [2.0, 5.0, 0.0],
        [3.0, 5.0, 0.0],
        [9.0, 1.0, 4.0],
        [7.0, 3.0, 6.0],
        [0.0, 2.0, 1.0],
        [2.0, 2.0, 3.0],
        [5.0, 2.0, 0.0],
    ]
)
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1])
PREDICTIONS = np.array([0, 0, 0, 1, 1, 1, 1, 0])


def test_delta_is_median_on_mistakes_minus_median_on_successes():
    scores = spuriousness_scores(EMBEDDINGS, LABELS, PREDICTIONS, n_classes=2)
    # class 0: wrong medians (8, 2, 5), right medians (2, 5, 0)
    np.testing.assert_allclose(scores.delta[0], [6.0, -3.0, 5.0])
    # class 1: wrong (5, 2, 0), right medians (1, 2, 2)
    np.testing.assert_allclose(scores.delta[1], [4.0, 0.0, -2.0])
    np.testing.assert_array_equal(scores.n_wrong, [2, 1])
    np.testing.assert_array_equal(scores.n_right, [3, 2])


def test_rule_all_needs_every_class_above_threshold():
    scores = spuriousness_scores(EMBEDDINGS, LABELS, PREDICTIONS, n_classes=2)
    np.testing.assert_array_equal(select_spurious(scores, "all", 0.0), [0])
    np.testing.assert_array_equal(select_spurious(scores, "all", 4.0), [])


def test_rule_any_needs_one_class_above_threshold():
    scores = spuriousness_scores(EMBEDDINGS, LABELS, PREDICTIONS, n_classes=2)
    np.testing.assert_array_equal(select_spurious(scores, "any", 0.0), [0, 2])
    np.testing.assert_array_equal(select_spurious(scores, "any", 5.0), [0])
    # a score equal to the threshold is not "above" it
    np.testing.assert_array_equal(select_spurious(scores, "any", 6.0), [])


def test_class_without_mistakes_gives_no_score_and_is_left_out_of_the_rules():
    predictions = PREDICTIONS.copy()
    predictions[7] = 1  # class 1 now has no mistakes
    scores = spuriousness_scores(EMBEDDINGS, LABELS, predictions, n_classes=2)
    assert np.isnan(scores.delta[1]).all()
    np.testing.assert_array_equal(scores.unscored_classes, [1])
    # "all" ranges over scored classes only: class 0 alone decides
    np.testing.assert_array_equal(select_spurious(scores, "all", 0.0), [0, 2])


def test_no_scored_class_selects_nothing():
    scores = spuriousness_scores(EMBEDDINGS, LABELS, LABELS, n_classes=2)  # no mistakes at all
    assert scores.scored_classes.size == 0
    assert select_spurious(scores, "all").size == 0
    assert select_spurious(scores, "any").size == 0


def test_unknown_rule_is_refused():
    scores = spuriousness_scores(EMBEDDINGS, LABELS, PREDICTIONS, n_classes=2)
    with pytest.raises(ValueError, match="rule must be one of"):
        select_spurious(scores, "some")
