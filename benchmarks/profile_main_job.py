"""Where the main job's time goes: per notebook and per cell (papermill records each cell's seconds in the executed
notebook), read from a reports folder after a main job, or after running one (``--run``).

    python benchmarks/profile_main_job.py                     # the executed notebooks in reports/
    python benchmarks/profile_main_job.py --run --profile quick --out /tmp/r [--only 00 02]

Prints the notebooks by seconds and the slowest cells, and writes
``benchmarks/results/main_job_profile_<profile>_<device>.json`` (``clipwb.precision.device_slug``): per notebook its seconds, cache state of the run
and every code cell's seconds with its first line (the step it runs)."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def cell_profile(nb_path: Path) -> dict:
    """{"seconds": sum of the code cells' papermill durations, "cells": [{index, seconds, step}]} of one executed
    notebook."""
    nb = json.loads(Path(nb_path).read_text())
    cells = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code":
            continue
        d = (c.get("metadata", {}).get("papermill") or {}).get("duration")
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        step = next((ln.strip() for ln in src.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
        cells.append({"index": i, "seconds": round(float(d or 0.0), 2), "step": step[:100]})
    return {"seconds": round(sum(c["seconds"] for c in cells), 1), "cells": cells}


def profile_reports(reports: Path) -> dict:
    """Every executed ``NN_*.ipynb`` of a reports folder (papermill's output), with the newest recorded run's cache
    state (runs.json) where there is one."""
    nbs = sorted(p for p in Path(reports).glob("*.ipynb") if re.match(r"^\d\d_", p.name))
    if not nbs:
        raise FileNotFoundError(f"no executed notebooks (NN_*.ipynb) in {reports}: run the main job first "
                                f"(bash scripts/report.sh), or pass --run")
    runs = reports / "runs.json"
    last = json.loads(runs.read_text())["runs"][-1] if runs.is_file() else {}
    return {"reports": str(reports), "machine": last.get("machine"), "cache": last.get("cache"),
            "profile": last.get("profile"), "notebooks": {p.stem: cell_profile(p) for p in nbs}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", default=str(ROOT / "reports"), help="the reports folder to read")
    ap.add_argument("--run", action="store_true", help="run the main job into --out first")
    ap.add_argument("--profile", default="full", choices=["full", "quick"])
    ap.add_argument("--out", default=None, help="with --run: the reports folder to write (default --reports)")
    ap.add_argument("--only", nargs="*", default=None, help="with --run: these notebooks only")
    ap.add_argument("--json", default=None, help="where to write (default: results/main_job_profile_<profile>_"
                                                 "<device>.json, the device as device_slug names it)")
    ap.add_argument("--top", type=int, default=10, help="slowest cells to print")
    args = ap.parse_args(argv)
    reports = Path(args.out or args.reports)
    if args.run:
        cmd = [sys.executable, "-m", "clipwb", "report", "--profile", args.profile, "--out", str(reports),
               "--no-progress"] + (["--only", *args.only] if args.only else [])
        subprocess.run(cmd, check=True, cwd=ROOT)
    prof = profile_reports(reports)
    import torch

    from clipwb.precision import device_slug

    # the device by name (a CPU's model and vector tier: two "AMD EPYC"s differ), as the other benchmarks name theirs
    device = device_slug("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.json) if args.json else RESULTS / f"main_job_profile_{prof.get('profile') or args.profile}_{device}.json"
    from clipwb.fileio import atomic_write_text

    atomic_write_text(out, json.dumps(prof, indent=1))
    nbs = prof["notebooks"]
    total = sum(n["seconds"] for n in nbs.values())
    print(f"{prof.get('machine')}; cache {prof.get('cache')}; {total:.0f} s in cells")
    for name, n in sorted(nbs.items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"  {name:28s} {n['seconds']:8.0f} s  {100 * n['seconds'] / max(total, 1e-9):5.1f} %")
    cells = sorted(((c["seconds"], name, c) for name, n in nbs.items() for c in n["cells"]), key=lambda t: -t[0])
    print(f"slowest {args.top} cells:")
    for secs, name, c in cells[:args.top]:
        print(f"  {secs:8.0f} s  {name} cell {c['index']}: {c['step']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
