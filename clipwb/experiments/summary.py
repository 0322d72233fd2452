"""The one seed summary: group runs, then mean and sample std (ddof 1; 0 for a single seed) of each metric."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def seed_summary(rows: list[dict], group: Callable[[dict], tuple], keys) -> list[tuple[tuple, int, dict]]:
    """[(group key, number of runs, {metric: (mean, std)})] in the order groups first appear; a metric missing
    from every run of a group is left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(group(r), []).append(r)
    out = []
    for key, rs in groups.items():
        stats = {}
        for k in keys:
            v = np.array([r[k] for r in rs if k in r], dtype=float)
            if len(v):
                stats[k] = (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
        out.append((key, len(rs), stats))
    return out
