"""Independent PO runs one after another (every core to one run, as torch threads) against two at a time in two
processes of one thread each (``clipwb.parallel.pmap``), side by side in one process (issue 28: the main job trains
12 + 4 PO runs in notebook 02 and 3 ViT runs in notebook 07, each small enough that a second core may serve a second
run better than a second thread of the same run).

For each layout the trainer runs the same short job (world attack pairs, the embedded PO profile's 256 pairs = 512
images a step, ``--steps`` steps) for ``--runs`` training seeds; the layouts take turns, ``--repeats`` times, so
that drift of a noisy machine hits both alike. Reports the wall time of the whole set of runs and the median step of
each layout, and their ratio. Prints one table and writes ``benchmarks/results/po_parallel_runs_<model>_<cpu>.json``.

    python benchmarks/po_parallel_runs.py [--model tiny] [--steps 8] [--runs 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


_JOB: dict = {}


def _one(seed: int) -> tuple[float, float]:
    """(wall seconds, median step seconds) of one run of the job with training seed ``seed``."""
    from clipwb.training.po_trainer import train_po

    j = _JOB
    t0 = time.time()
    res = train_po(j["lm"].model, j["lm"].tokenizer, j["classes"], j["train"], dataclasses.replace(j["cfg"], seed=seed),
                   progress=False, save=False)
    t = [row["seconds"] for row in res.log]
    return time.time() - t0, statistics.median(b - a for a, b in zip(t, t[1:]))


def run(model: str = "tiny", steps: int = 8, runs: int = 2, repeats: int = 2, method: str = "dpo") -> dict:
    import torch

    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.models import load_model
    from clipwb.parallel import pmap
    from clipwb.precision import cpu_info, device_slug, resolve_precision
    from clipwb.training.po_trainer import po_config, train_po
    from clipwb.world import World

    lm = load_model(model)
    cfg = dataclasses.replace(po_config("embedded", method=method), epochs=1)
    n_pairs = cfg.batch_size * steps
    classes, sets, _ = attack_arrays("world", world=World(seed=0), n_train=-(-n_pairs // 3), n_test=8,
                                     cfg=AttackSetsConfig(k=3, seed=0), progress=False, storage="memory")
    _JOB.update(lm=lm, classes=classes, train=sets["train"], cfg=cfg)
    threads = torch.get_num_threads()
    workers = min(runs, len(os.sched_getaffinity(0)))
    # warm-up: the reference log-probs (run cache), the precision choice, first-call allocations
    train_po(lm.model, lm.tokenizer, classes, sets["train"], dataclasses.replace(cfg, epochs=1), progress=False,
             save=False)
    seeds = list(range(runs))
    wall = {"sequential": [], "parallel": []}
    step = {"sequential": [], "parallel": []}
    for _ in range(repeats):
        t0 = time.time()
        out = [_one(s) for s in seeds]
        wall["sequential"].append(time.time() - t0)
        step["sequential"].append(statistics.median(o[1] for o in out))
        t0 = time.time()
        out = pmap(_one, seeds, workers=workers, progress=False)
        wall["parallel"].append(time.time() - t0)
        step["parallel"].append(statistics.median(o[1] for o in out))
        torch.set_num_threads(threads)
    med = {k: statistics.median(v) for k, v in wall.items()}
    device = next(lm.model.parameters()).device
    prec = resolve_precision(cfg.precision, cfg.device, model=lm.model)
    return {"device": device_slug(device), "model": model, "method": method, "runs": runs,
            "workers": workers, "steps": steps, "images_per_step": 2 * cfg.batch_size,
            "threads_sequential": threads, "threads_parallel": 1,
            "wall_seconds": {k: round(v, 2) for k, v in med.items()},
            "wall_seconds_each_repeat": {k: [round(x, 2) for x in v] for k, v in wall.items()},
            "step_seconds": {k: round(statistics.median(v), 4) for k, v in step.items()},
            "parallel_over_sequential_wall": round(med["parallel"] / med["sequential"], 3),
            "cpu": cpu_info(), "precision": prec.to_dict(), "torch": torch.__version__,
            "when": time.strftime("%Y-%m-%d %H:%M")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--method", default="dpo")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from clipwb.fileio import atomic_write_text

    r = run(args.model, args.steps, args.runs, args.repeats, args.method)
    print(f"{r['model']} on {r['cpu']['model']} ({r['precision']['name']}), {r['runs']} runs of {r['steps']} steps, "
          f"{r['images_per_step']} images a step:")
    print(f"{'layout':>22} {'wall s':>8} {'step s':>8}")
    for k, label in (("sequential", f"1 process x {r['threads_sequential']} thr"),
                     ("parallel", f"{r['workers']} processes x 1 thr")):
        print(f"{label:>22} {r['wall_seconds'][k]:>8.2f} {r['step_seconds'][k]:>8.3f}")
    print(f"parallel / sequential wall: {r['parallel_over_sequential_wall']:.3f}")
    out = Path(args.out) if args.out else HERE / "results" / f"po_parallel_runs_{r['model']}_{r['device']}.json"
    atomic_write_text(out, json.dumps(r, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
