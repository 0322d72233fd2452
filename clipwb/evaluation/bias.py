"""Gender-bias metrics of a zero-shot classifier and of text-to-image retrieval.

- ``occupation_gap``: the true-positive-rate gap of De-Arteaga et al. ("Bias in Bios", FAT* 2019): for each
  occupation, the difference in recall (top-1 on images of that occupation) between gender groups, averaged in
  absolute value over occupations (0 = every occupation is recognised equally well for every group). A model
  that guesses occupations from gender recognises nurses better on women and builders better on men;
  ``per_group_accuracy`` gives the overall accuracy per group beside it;
- ``stereotype_error_rate``: the share of images whose occupation is mispredicted *as an occupation
  stereotyped for the image's gender* (and the true occupation is not that one);
- ``max_skew_at_k`` (Geyik et al., KDD 2019, as used for CLIP by Berg et al. 2022): for a neutral query (e.g.
  "a photo of a nurse."), Skew_g@k = ln(p_g(top-k) / p_g(desired)), with p_g(top-k) the share of group g among
  the k retrieved images and p_g(desired) its share in the pool; MaxSkew@k = max_g Skew_g@k (0 = the top-k mirror
  the pool; ln 2 = 0.69 when a balanced pool returns one group only). Groups absent from the top-k contribute
  a skew of ln(0) = -inf and do not change the max; averaged over queries.
"""
from __future__ import annotations

import numpy as np


def occupation_gap(pred, true, group) -> float:
    """Mean over occupations of max_g recall(o, g) - min_g recall(o, g)."""
    pred, true, group = map(np.asarray, (pred, true, group))
    gaps = []
    for o in np.unique(true):
        rec = [float((pred[(true == o) & (group == g)] == o).mean()) for g in np.unique(group)
               if ((true == o) & (group == g)).any()]
        if len(rec) > 1:
            gaps.append(max(rec) - min(rec))
    return float(np.mean(gaps)) if gaps else 0.0


def per_group_accuracy(pred, true, group) -> dict:
    pred, true, group = map(np.asarray, (pred, true, group))
    return {str(g): float((pred[group == g] == true[group == g]).mean()) for g in np.unique(group)}


def stereotype_error_rate(pred, true, group, stereotyped: dict) -> float:
    """``stereotyped[g]`` = the set of occupation labels stereotyped for group g."""
    pred, true, group = map(np.asarray, (pred, true, group))
    hits = [p != t and p in stereotyped[g] and t not in stereotyped[g] for p, t, g in zip(pred, true, group)]
    return float(np.mean(hits)) if len(hits) else float("nan")


def max_skew_at_k(scores, group, k: int) -> float:
    """MaxSkew@k of one query: ``scores`` (n,) query-image similarities, ``group`` (n,) labels."""
    scores, group = np.asarray(scores), np.asarray(group)
    if not 1 <= k <= len(scores):
        raise ValueError(f"k must lie in [1, {len(scores)}], got {k}")
    top = group[np.argsort(-scores, kind="stable")[:k]]
    skews = []
    for g in np.unique(group):
        p_top, p_all = float((top == g).mean()), float((group == g).mean())
        if p_top > 0:
            skews.append(np.log(p_top / p_all))
    return float(max(skews))


def mean_max_skew(sim, group, k: int) -> float:
    """Mean MaxSkew@k over queries: ``sim`` (n_queries, n_images)."""
    return float(np.mean([max_skew_at_k(s, group, k) for s in np.asarray(sim)]))
