"""How good is the main job's time estimate on a machine with no history of its own? Replays every pair of recorded
whole runs (``reports/runs.json``, same profile and cache state, different CPU models): the "new" machine's run is
estimated from the other's, as ``clipwb.reports`` does at the start of a job (scaled by the two machines'
``calibration_s``, or unscaled), and then after each finished notebook, with the remaining notebooks' estimates
scaled by how the finished ones compared with theirs (``reports.remaining_seconds``). Prints one table of the
errors (estimate / actual - 1) and writes ``benchmarks/results/estimate_replay.json``.

    python benchmarks/estimate_replay.py [--runs reports/runs.json] [--state cold]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def replay(runs: list[dict], state: str = "cold", profile: str = "full") -> list[dict]:
    from clipwb.reports import remaining_seconds

    whole = [r for r in runs if r.get("whole", True) and r.get("profile") == profile
             and r.get("cache", {}).get("state") == state]
    rows = []
    for new in whole:
        for ref in whole:
            if ref["machine"] == new["machine"]:
                continue
            names = [n for n in new["notebooks"] if n in ref["notebooks"]]
            actual = sum(new["notebooks"][n] for n in names)
            per = {n: ref["notebooks"][n] for n in names}
            row = {"new": f"{new['machine']} ({actual:.0f} s)", "from": f"{ref['machine']} ({sum(per.values()):.0f} s)",
                   "unscaled": sum(per.values()) / actual - 1}
            if new.get("calibration_s") and ref.get("calibration_s"):
                row["calibrated"] = sum(per.values()) * new["calibration_s"] / ref["calibration_s"] / actual - 1
            # after the first k notebooks: the time taken so far plus the refined estimate of the rest
            done, after = {}, []
            for i, n in enumerate(names[:-1]):
                done[n] = new["notebooks"][n]
                left, _ = remaining_seconds(per, names[i + 1:], done)
                after.append(round((sum(done.values()) + left) / actual - 1, 4))
            row["after_each_notebook"] = after
            rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(HERE.parent / "reports" / "runs.json"))
    ap.add_argument("--state", default="cold")
    ap.add_argument("--out", default=str(HERE / "results" / "estimate_replay.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from clipwb.fileio import atomic_write_text

    runs = json.loads(Path(args.runs).read_text())["runs"]
    rows = replay(runs, args.state)
    if not rows:
        print(f"no two whole {args.state} runs on different machines in {args.runs}")
        return 0
    print(f"{'new machine':>34} {'estimated from':>44} {'unscaled':>9} {'calibr.':>8}  after 1, 2, 3 notebooks")
    for r in rows:
        cal = f"{r['calibrated']:+.0%}" if "calibrated" in r else "-"
        print(f"{r['new'][:34]:>34} {r['from'][:44]:>44} {r['unscaled']:>+9.0%} {cal:>8}  "
              + ", ".join(f"{x:+.0%}" for x in r["after_each_notebook"][:3]))
    atomic_write_text(Path(args.out), json.dumps({"state": args.state, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
