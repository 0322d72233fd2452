"""Peak memory of PO training against the size of the training set: images stored on disk (``data.store``, read a
batch at a time) against images stacked in memory.

For each case a fresh process (so that its peak resident memory is its own) writes or opens the set, computes the
reference log-probs over every image (a full pass, as ``train_po`` does), trains a few steps and reports its peak
RSS (``getrusage``). Sets: world pairs at 224 px (an attacked image, its clean source, the true and the written
class), streamed to disk once per size under ``--work`` and reused. Target: peak RSS at 20 000 images minus peak
RSS at 2 000 images < 300 MB with disk storage. Prints the figures and writes benchmarks/results/data_memory.json.

    python benchmarks/data_memory.py [--sizes 2000 20000] [--steps 5] [--memory-sizes 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


class _Stop(Exception):
    pass


def write_world_pairs(root: Path, n: int, image_size: int = 224, seed: int = 0, progress: bool = True) -> Path:
    """n (attacked, clean) world pairs at ``image_size`` as DiskArrays under root/n<n> (one image pair in memory at a
    time); reused when present."""
    from clipwb.data.store import DiskArrayWriter
    from clipwb.fileio import atomic_write_text
    from clipwb.progress import tqdm
    from clipwb.world import World

    out = root / f"n{n}-s{image_size}-seed{seed}"
    if (out / "labels.json").is_file():
        return out
    world = World(seed=seed, image_size=image_size)
    true, written = [], []
    with DiskArrayWriter(out / "typo") as wt, DiskArrayWriter(out / "clean") as wc:
        for i in tqdm(range(n), disable=not progress, desc=f"writing {n} pairs"):
            typo, rec = world.sample(i, "train", "typographic")
            clean, _ = world.sample(i, "train", "object")
            wt.append(np.asarray(typo)[None])
            wc.append(np.asarray(clean)[None])
            true.append(int(rec["label"]))
            written.append(int(rec["written_label"]))
    atomic_write_text(out / "labels.json", json.dumps({"true": true, "written": written}))
    return out


def child(args) -> dict:
    import torch

    from clipwb.data.builders import PreferencePairs
    from clipwb.data.store import DiskArray
    from clipwb.models import load_model
    from clipwb.training.po_trainer import po_config, train_po
    from clipwb.world import World

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    d = write_world_pairs(Path(args.work), args.n, args.image_size, progress=False)
    write_s = time.time() - t0
    labels = json.loads((d / "labels.json").read_text())
    typo, clean = DiskArray(d / "typo"), DiskArray(d / "clean")
    if args.storage == "memory":
        typo, clean = typo.load(), clean.load()
    pairs = PreferencePairs(clean=clean, typo=typo, true=np.array(labels["true"]), written=np.array(labels["written"]))
    lm = load_model("tiny", "cpu")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = po_config("embedded", method="dpo", batch_size=args.batch, epochs=1, device="cpu")
    steps = []

    def stop(step, row):
        steps.append(row["seconds"])
        if step >= args.steps:
            raise _Stop

    t1 = time.time()
    try:
        train_po(lm.model, lm.tokenizer, World.classes, pairs, cfg, progress=False, on_step=stop)
    except _Stop:
        pass
    return {"storage": args.storage, "n": args.n, "image_size": args.image_size, "steps": len(steps),
            "batch_pairs": args.batch, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_before_training_mb": round(rss_loaded, 1), "write_or_open_s": round(write_s, 1),
            "reference_pass_and_steps_s": round(time.time() - t1, 1),
            "data_bytes_mb": round((typo.nbytes + clean.nbytes) / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="training pairs, disk storage")
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[2000], help="training pairs, in memory")
    ap.add_argument("--steps", type=int, default=5, help="optimiser steps after the reference pass")
    ap.add_argument("--batch", type=int, default=64, help="pairs per step")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--work", default=None, help="where the sets are written (default: <clipwb cache>/bench-data)")
    ap.add_argument("--out", default=str(RESULTS / "data_memory.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--storage", default="disk", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return

    from clipwb.fileio import atomic_write_text, cache_dir
    from clipwb.precision import cpu_info

    work = Path(args.work) if args.work else cache_dir() / "bench-data"
    for n in sorted(set(args.sizes) | set(args.memory_sizes)):  # written here, with a progress bar
        write_world_pairs(work, n, args.image_size)
    rows = []
    for storage, sizes in (("disk", args.sizes), ("memory", args.memory_sizes)):
        for n in sizes:
            cmd = [sys.executable, __file__, "--child", "--storage", storage, "--n", str(n), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--image-size", str(args.image_size), "--work", str(work)]
            env = {**os.environ, "CLIPWB_CACHE": str(work / "cache")}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode:
                raise SystemExit(f"{storage} n={n} failed:\n{res.stderr[-3000:]}")
            row = json.loads(res.stdout.split("RESULT ", 1)[1])
            rows.append(row)
            print(f"{storage:6s} n={n:6d}: peak RSS {row['peak_rss_mb']:8.1f} MB (images {row['data_bytes_mb']:.0f} MB, "
                  f"{row['steps']} steps, {row['reference_pass_and_steps_s']} s)")
    disk = {r["n"]: r["peak_rss_mb"] for r in rows if r["storage"] == "disk"}
    out = {"machine": {"cpu": cpu_info(), "platform": platform.platform()}, "rows": rows}
    if len(disk) >= 2:
        lo, hi = min(disk), max(disk)
        out["disk_growth_mb"] = round(disk[hi] - disk[lo], 1)
        out["disk_growth_sizes"] = [lo, hi]
        out["target_mb"] = 300
        out["met"] = out["disk_growth_mb"] < 300
        print(f"disk storage: peak RSS at {hi} pairs - at {lo} pairs = {out['disk_growth_mb']} MB "
              f"(target < 300 MB: {'met' if out['met'] else 'MISSED'})")
    atomic_write_text(Path(args.out), json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
