#!/usr/bin/env python
"""Compare two reports/metrics folders: every metric identical, timings and the machine block aside.

    python scripts/compare_metrics.py BEFORE/metrics AFTER/metrics
"""
import json, sys, math
from pathlib import Path

SKIP = ("seconds", "machine", "_s", "time")

def walk(a, b, path, diffs):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if any(s in k for s in SKIP):
                continue
            if k not in a or k not in b:
                diffs.append(f"{path}/{k}: only in {'after' if k not in a else 'before'}")
                continue
            walk(a[k], b[k], f"{path}/{k}", diffs)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append(f"{path}: lengths {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", diffs)
    else:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return
        if a != b:
            diffs.append(f"{path}: {a!r} != {b!r}")

before, after = Path(sys.argv[1]), Path(sys.argv[2])
total = 0
for f in sorted(before.glob("*.json")):
    g = after / f.name
    if not g.is_file():
        print(f"{f.name}: missing after"); continue
    diffs = []
    walk(json.loads(f.read_text()), json.loads(g.read_text()), "", diffs)
    total += len(diffs)
    print(f"{f.name}: {'identical' if not diffs else f'{len(diffs)} differences'}")
    for d in diffs[:15]:
        print("   ", d)
print("TOTAL differences:", total)
