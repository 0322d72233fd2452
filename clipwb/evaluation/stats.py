"""Uncertainty of the numbers the notebooks compare, in one place (scipy.stats underneath):

- ``top1_ci`` / ``wilson_ci``: a 95 % interval for a top-1 over test images (Wilson's score interval, through
  ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``);
- ``seed_summary``: mean, std (ddof 1), every value and a t-interval over training seeds;
- ``paired_test``: two classifiers on the same images: the difference of their top-1, a paired bootstrap interval of
  it (``scipy.stats.bootstrap(..., paired=True)``) and McNemar's exact test on the discordant images
  (``scipy.stats.binomtest`` of b successes in b + c trials at p = 1/2), with "significant at 5 %" from the test.
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def wilson_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval for k successes in n trials."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def top1_ci(correct, level: float = LEVEL) -> tuple[float, float]:
    """The interval of a top-1 from its per-image correctness (bool or 0/1 array)."""
    c = np.asarray(correct).astype(bool).ravel()
    return wilson_ci(int(c.sum()), len(c), level)


def seed_summary(values, level: float = LEVEL) -> dict:
    """{"mean", "std", "n", "ci", "values"} of one number over training seeds; the interval is mean +- t * std /
    sqrt(n) with Student's t at n - 1 degrees of freedom (None for a single seed)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) == 0:
        raise ValueError("seed_summary needs at least one value")
    mean = float(v.mean())
    if len(v) == 1:
        return {"mean": mean, "std": None, "n": 1, "ci": None, "values": v.tolist()}
    std = float(v.std(ddof=1))
    half = float(t.ppf(0.5 + level / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return {"mean": mean, "std": std, "n": int(len(v)), "ci": (mean - half, mean + half), "values": v.tolist()}


def mcnemar_exact(correct_a, correct_b) -> float:
    """Two-sided p-value of McNemar's exact test: among the images exactly one classifier gets right (b where only
    A does, c where only B does), is b ~ Binomial(b + c, 1/2)? 1.0 when there is no discordant image."""
    from scipy.stats import binomtest

    a, b = (np.asarray(x).astype(bool).ravel() for x in (correct_a, correct_b))
    if a.shape != b.shape:
        raise ValueError(f"paired predictions need the same images: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_test(correct_a, correct_b, level: float = LEVEL, n_resamples: int = 2000, seed: int = 0,
                alpha: float = 0.05) -> dict:
    """A vs B on the same images: {"diff": top1(A) - top1(B), "ci": paired bootstrap interval of the difference
    (percentile), "p_mcnemar", "significant": p < ``alpha``, "n", "discordant": (only A right, only B right)}."""
    from scipy.stats import bootstrap

    a, b = (np.asarray(x).astype(np.float64).ravel() for x in (correct_a, correct_b))
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"paired predictions need the same, non-empty images: {a.shape} vs {b.shape}")
    diff = float(a.mean() - b.mean())
    if np.array_equal(a, b):
        ci = (0.0, 0.0)
    else:
        res = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis), paired=True,
                        vectorized=True, n_resamples=n_resamples, confidence_level=level, method="percentile",
                        random_state=np.random.default_rng(seed))
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    p = mcnemar_exact(a, b)
    return {"diff": diff, "ci": ci, "p_mcnemar": p, "significant": bool(p < alpha), "n": int(len(a)),
            "discordant": (int(((a > 0) & (b == 0)).sum()), int(((a == 0) & (b > 0)).sum()))}
