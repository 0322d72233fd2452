"""A cut's before and after, side by side: the metrics JSON of a notebook run before a cut (reports/metrics/NN_*.json
of the committed reports, or a copy) against the same notebook's after it, key by key, with the intervals each run
carries (``<key>_ci`` = [low, high], or {"mean", "std"} over seeds), and whether the two overlap.

    python benchmarks/compare_cut.py BEFORE.json AFTER.json [--match linear_probe zero_shot] [--out cut.json]

Prints one row per shared numeric metric whose name matches ``--match`` (all by default), then every paired verdict
(a difference with its interval and "significant") whose significance or sign changed, and writes both as JSON
(default: benchmarks/results/cut_<notebook>.json)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def flatten(d, prefix: str = "") -> dict:
    """{"a.b.mean": 1.0, ...} of a nested metrics dict; [low, high] lists kept whole under their key."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and len(d) == 2 and all(isinstance(x, (int, float)) for x in d):
        out[prefix[:-1]] = [float(x) for x in d]
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix[:-1]] = float(d)
    return out


def interval(flat: dict, key: str):
    """The interval of ``key``: its ``_ci`` sibling, else mean +- 2 std where the key is a ``.mean``."""
    ci = flat.get(f"{key}_ci")
    if isinstance(ci, list):
        return ci
    if key.endswith(".mean") and isinstance(flat.get(key[:-5] + ".std"), float):
        m, s = flat[key], flat[key[:-5] + ".std"]
        return [m - 2 * s, m + 2 * s]
    return None


def compare(before: dict, after: dict, match=()) -> list[dict]:
    fb, fa = flatten(before), flatten(after)
    rows = []
    for k in sorted(set(fb) & set(fa)):
        # a number on both sides (a key that is a number on one side and a [low, high] pair on the other, as when
        # a per-seed list has two entries in one run, is no comparison)
        if not (isinstance(fb[k], float) and isinstance(fa[k], float)) or k.endswith(".std") or "seconds" in k or (
                match and not any(m in k for m in match)):
            continue
        ib, ia = interval(fb, k), interval(fa, k)
        overlap = None if ib is None or ia is None else bool(ib[0] <= ia[1] and ia[0] <= ib[1])
        rows.append({"metric": k, "before": fb[k], "after": fa[k], "diff": fa[k] - fb[k], "before_ci": ib,
                     "after_ci": ia, "overlap": overlap})
    return rows


# a verdict's outcome; every other string or number in it (a, b, metric, method, noise_share, task, ...) says which
# comparison it is, so that rows differing only there (notebook 05's per-method, per-noise rows) stay apart; flags
# (True / False / None, e.g. notebook 07's selection_near_edge) annotate a row and do not name it
OUTCOME_FIELDS = {"ci", "ci_pts", "diff", "diff_pts", "diff_std", "p", "p_mcnemar", "significant"}


def _identity(v: dict) -> tuple:
    return tuple(sorted((k, str(x)) for k, x in v.items()
                        if k not in OUTCOME_FIELDS and isinstance(x, (str, int, float)) and not isinstance(x, bool)))


def verdict_rows(d, path: str = "") -> dict:
    """Every paired verdict of a metrics dict (a list entry with "significant", as ``evaluation.stats`` and
    ``experiments.gca.versus_baseline`` write them), keyed by (where it sits, the fields that name the comparison)."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(verdict_rows(v, f"{path}.{k}" if path else k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            if isinstance(v, dict) and "significant" in v:
                out[(path, _identity(v))] = v
            else:
                out.update(verdict_rows(v, f"{path}[{i}]"))
    return out


def compare_verdicts(before: dict, after: dict) -> list[dict]:
    """The verdicts both runs hold, side by side; ``kept`` is False where significance changed or a significant
    difference changed sign (a changed conclusion). ``a`` is the row's ``a`` (else its defence or method), ``b`` its
    ``b`` (else "baseline"), ``setting`` the rest of what names it (e.g. noise_share, task)."""
    vb, va = verdict_rows(before), verdict_rows(after)
    rows = []
    for key in sorted(set(vb) & set(va)):
        b, a = vb[key], va[key]
        ident = dict(key[1])
        name_a = ident.pop("a", None) or ident.pop("defence", None) or ident.pop("method", None)
        name_b = ident.pop("b", "baseline")
        metric = ident.pop("metric", None)
        db, da = (v.get("diff_pts", v.get("diff")) for v in (b, a))
        flipped = b["significant"] != a["significant"] or bool(
            b["significant"] and db is not None and da is not None and (db > 0) != (da > 0))
        rows.append({"where": key[0], "a": name_a, "b": name_b, "metric": metric,
                     "setting": ", ".join(f"{k} {x}" for k, x in ident.items()),
                     "before_diff": db, "before_ci": b.get("ci_pts", b.get("ci")),
                     "before_significant": b["significant"],
                     "after_diff": da, "after_ci": a.get("ci_pts", a.get("ci")),
                     "after_significant": a["significant"], "kept": not flipped})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--match", nargs="*", default=(), help="only metrics whose name contains one of these")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    before, after = (json.loads(Path(p).read_text()) for p in (args.before, args.after))
    rows = compare(before, after, tuple(args.match))
    if not rows:
        print("no shared metric matches", file=sys.stderr)
        return 1
    fmt = lambda ci: "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"  # noqa: E731
    for r in rows:
        flag = {True: "", False: "  NO OVERLAP", None: ""}[r["overlap"]]
        print(f"{r['metric']:60s} {r['before']:8.3f} {fmt(r['before_ci']):18s} -> {r['after']:8.3f} "
              f"{fmt(r['after_ci']):18s}{flag}")
    n_no = sum(r["overlap"] is False for r in rows)
    print(f"{len(rows)} metrics, {sum(r['overlap'] is not None for r in rows)} with intervals on both sides, "
          f"{n_no} without overlap; before: {before.get('machine', {}).get('cpu')}, "
          f"after: {after.get('machine', {}).get('cpu')}")
    verdicts = compare_verdicts(before, after)
    for v in verdicts:
        if not v["kept"]:
            setting = f" ({v['setting']})" if v["setting"] else ""
            print(f"VERDICT CHANGED {v['where']} {v['a']} vs {v['b']} {v['metric']}{setting}: {v['before_diff']} "
                  f"{v['before_ci']} -> {v['after_diff']} {v['after_ci']}")
    if verdicts:
        print(f"{len(verdicts)} paired verdicts in both, {sum(not v['kept'] for v in verdicts)} changed")
    out = Path(args.out) if args.out else HERE / "results" / f"cut_{Path(args.after).stem}.json"
    from clipwb.fileio import atomic_write_text

    clean = lambda r: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}  # noqa: E731
    atomic_write_text(out, json.dumps({"before": args.before, "after": args.after, "rows": [clean(r) for r in rows],
                                       "verdicts": [clean(v) for v in verdicts]}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
