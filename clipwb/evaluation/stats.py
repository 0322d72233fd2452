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
    """A vs B on the same images: {"diff": mean(A) - mean(B), "ci": paired bootstrap interval of the difference
    (percentile, resampling images), "p_mcnemar", "significant", "n", "discordant"}. For 0/1 correctness (one model
    each) the verdict is McNemar's exact test at ``alpha``; for seed-averaged correctness (scores in [0, 1]) there
    is no exact test (``p_mcnemar`` None, ``discordant`` None) and a difference is significant when its interval
    excludes 0."""
    from scipy.stats import bootstrap

    a, b = (np.asarray(x, dtype=np.float64).ravel() for x in (correct_a, correct_b))
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
    binary = np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()
    if binary:
        p = mcnemar_exact(a > 0.5, b > 0.5)
        significant, discordant = p < alpha, (int(((a > 0) & (b == 0)).sum()), int(((a == 0) & (b > 0)).sum()))
    else:
        p, significant, discordant = None, not (ci[0] <= 0.0 <= ci[1]), None
    return {"diff": diff, "ci": ci, "p_mcnemar": p, "significant": bool(significant), "n": int(len(a)),
            "discordant": discordant}


# -- per-image correctness in JSON, and runs over several training seeds ------------------------------------------
def pack_correct(correct: dict) -> dict:
    """{key: bool array} -> {key: [n, base64 of the packed bits]} (JSON-able, 1 bit an image)."""
    import base64

    return {k: [int(len(v)), base64.b64encode(np.packbits(np.asarray(v, dtype=bool)).tobytes()).decode()]
            for k, v in correct.items()}


def unpack_correct(packed: dict) -> dict:
    import base64

    return {k: np.unpackbits(np.frombuffer(base64.b64decode(b), dtype=np.uint8))[:n].astype(bool)
            for k, (n, b) in packed.items()}


def image_ci(scores, level: float = LEVEL, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The interval over images of a mean of per-image scores: Wilson's for 0/1 scores (one model), a percentile
    bootstrap over images for scores in [0, 1] (a model's seed-averaged correctness)."""
    from scipy.stats import bootstrap

    s = np.asarray(scores, dtype=np.float64).ravel()
    if np.isin(s, (0.0, 1.0)).all():
        return top1_ci(s > 0.5, level)
    res = bootstrap((s,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate_seeds(metrics: list[dict], correct: list[dict] | None = None, seeds=None, level: float = LEVEL):
    """Runs of one model over training seeds -> (metrics, per-image scores). Every number becomes its mean over
    seeds with ``<key>_std``, ``<key>_seeds`` (every seed's value) and, from two seeds on, ``<key>_seed_ci`` (the
    t-interval over seeds); a top-1 with per-image ``correct`` gets ``<key>_ci`` over images of the seed-averaged
    correctness (``image_ci``). One seed returns its metrics unchanged. The scores are {key: mean over seeds of the
    0/1 correctness per image} for ``paired_test``."""
    scores = None
    if correct:
        scores = {k: np.mean([np.asarray(c[k], dtype=np.float64) for c in correct], axis=0) for k in correct[0]}
    if len(metrics) == 1:
        return dict(metrics[0]), scores
    out = {}
    for k, v in metrics[0].items():
        vals = [m.get(k) for m in metrics]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            continue
        s = seed_summary(vals, level)
        out[k], out[f"{k}_std"], out[f"{k}_seeds"], out[f"{k}_seed_ci"] = s["mean"], s["std"], s["values"], s["ci"]
        if scores is not None and k.endswith("_top1") and k[:-5] in scores:
            out[f"{k}_ci"] = list(image_ci(scores[k[:-5]], level))
    if seeds is not None:
        out["seeds"] = list(seeds)
    return out, scores


def with_interval(metrics: dict, key: str, digits: int = 3) -> str | None:
    """``metrics[key]`` as text with its spread: "0.781 ± 0.012 [0.752, 0.808]" (± the std over seeds where there
    are several, then the 95 % interval over images), None where the key is missing."""
    v = metrics.get(key)
    if v is None or not isinstance(v, (int, float)):
        return None
    text = f"{v:.{digits}f}"
    if metrics.get(f"{key}_std") is not None:
        text += f" ± {metrics[f'{key}_std']:.{digits}f}"
    ci = metrics.get(f"{key}_ci")
    if ci is not None:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def interval_table(rows: dict, keys, digits: int = 3) -> dict:
    """{row: {key: ``with_interval`` text}} of named metric dicts, for the notebooks' tables."""
    return {name: {k: with_interval(m, k, digits) for k in keys if k in m} for name, m in rows.items()}
