import numpy as np
import pytest

from clipwb.evaluation.bias import (max_skew_at_k, mean_max_skew, occupation_gap, per_group_accuracy,
                                    stereotype_error_rate)


def test_gap_and_group_accuracy():
    true = np.array([0, 1, 2, 0, 1, 2, 1])
    pred = np.array([0, 1, 2, 0, 0, 0, 1])
    g = np.array(["m", "m", "m", "w", "w", "w", "w"])
    assert per_group_accuracy(pred, true, g) == {"m": 1.0, "w": pytest.approx(2 / 4)}
    # recall gaps per occupation: 0 -> |1 - 1| = 0, 1 -> |1 - 1/2| = 1/2, 2 -> |1 - 0| = 1
    assert occupation_gap(pred, true, g) == pytest.approx((0 + 0.5 + 1) / 3)
    assert occupation_gap(true, true, g) == 0


def test_stereotype_errors_count_only_errors_toward_the_groups_stereotype():
    st = {"m": {0}, "w": {1, 2}}
    true = np.array([1, 2, 0, 0, 2])
    pred = np.array([0, 0, 1, 2, 1])
    g = np.array(["m", "m", "w", "w", "w"])
    # (m, true 1 -> 0): stereotyped error; (m, 2 -> 0): yes; (w, 0 -> 1): yes; (w, 0 -> 2): yes;
    # (w, true 2 -> 1): the true occupation is already stereotyped for w: not counted
    assert stereotype_error_rate(pred, true, g, st) == pytest.approx(4 / 5)
    assert stereotype_error_rate(true, true, g, st) == 0


def test_max_skew_matches_its_definition():
    g = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    scores = np.array([8, 7, 6, 5, 4, 3, 2, 1.0])
    # top-4 = groups [0, 0, 1, 1]: matches the balanced pool
    assert max_skew_at_k(scores, g, 4) == pytest.approx(0.0)
    # top-2 = [0, 0]: ln(1 / 0.5)
    assert max_skew_at_k(scores, g, 2) == pytest.approx(np.log(2))
    # top-3 = [0, 0, 1]: max(ln((2/3)/0.5), ln((1/3)/0.5))
    assert max_skew_at_k(scores, g, 3) == pytest.approx(np.log(4 / 3))
    # reversed: top-2 = [1, 0], skew 0; the mean over the two queries is ln(2) / 2
    assert mean_max_skew(np.stack([scores, scores[::-1]]), g, 2) == pytest.approx(np.log(2) / 2)
    with pytest.raises(ValueError, match="k must lie"):
        max_skew_at_k(scores, g, 0)
