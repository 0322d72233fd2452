"""Where `python -m clipwb train-po` spends its time, against the bare step (issue 28's 42 vs 141 pairs/s).

Runs what the command runs with its defaults (world data, 4 000 sources x 3 attacks, the embedded PO profile), timed
phase by phase in one process: building the attack sets (a fresh dataset folder: cold), the trainer's setup (frozen
reference copy, reference log-probs of every training image, prompt features), its optimiser steps (median gap
between log rows), and the evaluation the command prints; then, in the same run, the bare forward + backward of the
image tower over the same number of images per step (``po_step.py``'s ``floor``) at the trainer's batch. Prints one
table and writes ``benchmarks/results/train_po_phases_<cpu or gpu>.json``.

    python benchmarks/train_po_phases.py [--method dpo] [--n-train 4000] [--k 3] [--floor-steps 8]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _po_step():
    spec = importlib.util.spec_from_file_location("po_step", HERE / "po_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def phases(method: str = "dpo", n_train: int = 4000, n_test: int = 1024, k: int = 3, floor_steps: int = 8,
           model: str = "tiny", epochs: int | None = None, batch: int | None = None) -> dict:
    """Seconds per phase of train-po's path, and the trainer's step against the bare step at the same batch."""
    import dataclasses

    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.evaluation.typographic import po_eval
    from clipwb.losses.po import po_method
    from clipwb.models import load_model
    from clipwb.precision import cpu_info
    from clipwb.training.po_trainer import po_config, train_po
    from clipwb.world import World

    ps = _po_step()
    t = {}
    t0 = time.perf_counter()
    lm = load_model(model)
    t["load_model"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        classes, data, _ = attack_arrays("world", world=World(seed=0), n_train=n_train, n_test=n_test,
                                         cfg=AttackSetsConfig(k=k, seed=0), root=Path(root) / "datasets",
                                         progress=False, storage="memory")
        t["build_sets"] = time.perf_counter() - t0
    cfg = po_config("embedded", method=method)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("epochs", epochs), ("batch_size", batch)) if v is not None})
    t0 = time.perf_counter()
    res = train_po(lm.model, lm.tokenizer, classes, data["train"], cfg, progress=False, save=False)
    t["train_po"] = time.perf_counter() - t0
    secs = [r["seconds"] for r in res.log]
    step = statistics.median(np.diff(secs)) if len(secs) > 1 else secs[0]
    t["train_setup"] = secs[0] - step  # reference copy, reference log-probs, prompt features: before step 1
    t["train_steps"] = secs[-1] - t["train_setup"]
    t["train_after_steps"] = t["train_po"] - secs[-1]  # BMA's averaged model, unwrapping
    t0 = time.perf_counter()
    po_eval(res.model, lm.tokenizer, classes, data, lm.model, cfg.templates)
    po_eval(res.avg_model, lm.tokenizer, classes, data, lm.model, cfg.templates)
    t["eval"] = time.perf_counter() - t0

    clean = po_method(method).needs_clean
    imgs = cfg.batch_size * (2 if clean else 1)
    train = data["train"]
    device = next(lm.model.parameters()).device
    amp = res.precision["name"] == "bf16"  # the floor runs in the precision the trainer chose for this model
    # the floor pushes a typographic and a clean image per pair: a method without the clean images takes half the pairs
    fb = cfg.batch_size if clean else max(1, cfg.batch_size // 2)
    floor = ps.floor(lm, classes, train, cfg, ps._batches(train, fb, floor_steps + 1), device, amp)[1:]
    floor_step = statistics.median(floor)
    pairs = len(train["typo"]) * cfg.epochs
    total = t["load_model"] + t["build_sets"] + t["train_po"] + t["eval"]
    return {"device": ps.device_slug(device), "method": method, "steps": res.steps, "batch_pairs": cfg.batch_size, "images_per_step": imgs,
            "pairs_trained": pairs, "seconds": {k: round(v, 2) for k, v in t.items()}, "command_seconds": round(total, 1),
            "step_seconds": round(step, 4), "floor_step_seconds": round(floor_step, 4),
            "step_vs_floor": round(floor_step / step, 3),
            "pairs_per_s": {"steps_only": round(cfg.batch_size / step, 1),
                            "train_po": round(pairs / t["train_po"], 1), "whole_command": round(pairs / total, 1)},
            "img_per_s_steps": round(imgs / step, 1), "cpu": cpu_info(), "precision": res.precision}


def main(argv=None) -> int:
    from clipwb.fileio import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="dpo")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1024)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="default: the embedded profile's")
    ap.add_argument("--batch", type=int, default=None, help="pairs per step (default: the embedded profile's)")
    ap.add_argument("--floor-steps", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    r = phases(args.method, args.n_train, args.n_test, args.k, args.floor_steps, args.model, args.epochs,
               args.batch)
    print(f"train-po {r['method']} on {r['cpu']['model']} (native bf16 {r['cpu']['bf16_native']}), precision "
          f"{r['precision']['name']}: {r['steps']} steps of {r['batch_pairs']} pairs ({r['images_per_step']} images)")
    for k, v in r["seconds"].items():
        print(f"  {k:18s} {v:8.1f} s")
    print(f"  whole command      {r['command_seconds']:8.1f} s")
    print(f"step {r['step_seconds']:.3f} s vs bare forward+backward {r['floor_step_seconds']:.3f} s: "
          f"{r['step_vs_floor']:.2f}x the floor; pairs/s: {r['pairs_per_s']}")
    out = Path(args.out) if args.out else HERE / "results" / f"train_po_phases_{r['device']}.json"
    atomic_write_text(out, json.dumps(r, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
