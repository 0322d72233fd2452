"""Intervals and paired tests against closed forms and scipy on cases whose answer is known."""
import math

import numpy as np
import pytest

from clipwb.evaluation.stats import mcnemar_exact, paired_test, seed_summary, top1_ci, wilson_ci


def test_wilson_interval_is_the_closed_form():
    k, n, z = 900, 1024, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_ci(k, n)
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert top1_ci(np.r_[np.ones(k, bool), np.zeros(n - k, bool)]) == (lo, hi)
    # about +-2 binomial standard errors near 0.9 on 1 024 images, as the issue says (0.009 each)
    assert 0.035 < hi - lo < 0.04
    lo0, hi0 = wilson_ci(0, 10)
    assert lo0 == 0.0 and 0.2 < hi0 < 0.35  # Wilson stays inside [0, 1], unlike the Wald interval
    with pytest.raises(ValueError):
        wilson_ci(5, 3)


def test_seed_summary_is_a_t_interval():
    s = seed_summary([0.70, 0.74, 0.72])
    assert s["mean"] == pytest.approx(0.72) and s["std"] == pytest.approx(0.02) and s["n"] == 3
    t975_2 = 4.302652729911275  # Student's t, 2 degrees of freedom
    assert s["ci"][0] == pytest.approx(0.72 - t975_2 * 0.02 / math.sqrt(3))
    assert s["ci"][1] == pytest.approx(0.72 + t975_2 * 0.02 / math.sqrt(3))
    assert s["values"] == [0.70, 0.74, 0.72]
    one = seed_summary([0.5])
    assert one["std"] is None and one["ci"] is None


def test_paired_test_on_hand_built_predictions():
    # 100 images: both right on 80, both wrong on 5, only A right on 12, only B right on 3
    a = np.r_[np.ones(80), np.zeros(5), np.ones(12), np.zeros(3)].astype(bool)
    b = np.r_[np.ones(80), np.zeros(5), np.zeros(12), np.ones(3)].astype(bool)
    res = paired_test(a, b)
    assert res["diff"] == pytest.approx(0.09) and res["discordant"] == (12, 3)
    # McNemar's exact p: 2 * P(X <= 3), X ~ Bin(15, 1/2)
    expect = 2 * sum(math.comb(15, i) for i in range(4)) / 2 ** 15
    assert res["p_mcnemar"] == pytest.approx(expect) and res["significant"]
    assert res["ci"][0] < 0.09 < res["ci"][1] and res["ci"][0] > 0
    # no difference at all: p = 1, interval (0, 0), not significant
    same = paired_test(a, a)
    assert same["p_mcnemar"] == 1.0 and same["ci"] == (0.0, 0.0) and not same["significant"]
    # a balanced disagreement is not significant however large
    c = np.r_[np.ones(50), np.zeros(50)].astype(bool)
    assert not paired_test(c, ~c)["significant"] and mcnemar_exact(c, ~c) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same"):
        paired_test(a, a[:10])


def test_seeds_aggregate_and_scores_pack_into_json():
    from clipwb.evaluation.stats import aggregate_seeds, image_ci, pack_correct, unpack_correct

    rng = np.random.default_rng(0)
    c = [{"typo": rng.random(300) < p, "clean": rng.random(300) < 0.9} for p in (0.6, 0.7, 0.65)]
    packed = pack_correct(c[0])
    assert all(np.array_equal(v, c[0][k]) for k, v in unpack_correct(packed).items())
    m = [{"typo_top1": float(x["typo"].mean()), "clean_top1": float(x["clean"].mean()), "note": "x"} for x in c]
    agg, scores = aggregate_seeds(m, c, seeds=(0, 1, 2))
    assert agg["typo_top1"] == pytest.approx(np.mean([x["typo_top1"] for x in m]))
    assert agg["typo_top1_seeds"] == [x["typo_top1"] for x in m] and agg["typo_top1_std"] > 0
    assert agg["typo_top1_seed_ci"][0] < agg["typo_top1"] < agg["typo_top1_seed_ci"][1]
    assert agg["typo_top1_ci"][0] < agg["typo_top1"] < agg["typo_top1_ci"][1] and agg["seeds"] == [0, 1, 2]
    assert "note" not in agg and scores["typo"].max() <= 1 and len(scores["typo"]) == 300
    one, _ = aggregate_seeds(m[:1], c[:1])
    assert one == m[0]
    # seed-averaged scores: a bootstrap interval, and paired verdicts from it (no exact test)
    lo, hi = image_ci(scores["typo"])
    assert lo < scores["typo"].mean() < hi
    res = paired_test(scores["clean"], scores["typo"])
    assert res["p_mcnemar"] is None and res["significant"] and res["ci"][0] > 0
