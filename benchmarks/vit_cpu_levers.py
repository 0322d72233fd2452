"""Two ways to speed up the ViT tower's training on a CPU, each against the plain fp32 eager path, side by side in
one process (issue 28: 07's ViT rows train at ~3 s a step in fp32; bf16 autocast was slower on the AMD EPYC):

- ``compile``: the PO trainer's step under ``torch.compile`` (``POConfig.compile="on"``) against eager, the same
  short job (world attack pairs, the embedded PO profile's 512 images a step) from the same seed, the two modes taking
  turns ``--repeats`` times: median step after the first (compilation happens there) and the first step's seconds;
- ``matmul``: the image tower's forward + backward over a batch with fp32 matmuls and convolutions in full fp32
  (``torch.backends.mkldnn.{matmul,conv}.fp32_precision = "ieee"``) against bf16 arithmetic inside them ("bf16",
  what ``torch.set_float32_matmul_precision("medium")`` selects on CPUs with bf16 dot products); the two alternate
  ``--repeats`` times.

Prints one table and writes ``benchmarks/results/vit_cpu_levers_<cpu>.json``.

    python benchmarks/vit_cpu_levers.py [--model tiny-vit] [--steps 8] [--batch 256] [--repeats 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def compile_lever(lm, steps: int, repeats: int) -> dict:
    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.training.po_trainer import po_config, train_po
    from clipwb.world import World

    cfg = dataclasses.replace(po_config("embedded", method="dpo"), epochs=1)
    classes, sets, _ = attack_arrays("world", world=World(seed=0), n_train=-(-cfg.batch_size * steps // 3), n_test=8,
                                     cfg=AttackSetsConfig(k=3, seed=0), progress=False, storage="memory")
    runs = {"eager": [], "compiled": []}
    for _ in range(repeats):  # the two modes take turns, so that drift of a noisy machine hits both alike
        for mode, name in (("off", "eager"), ("on", "compiled")):
            res = train_po(lm.model, lm.tokenizer, classes, sets["train"], dataclasses.replace(cfg, compile=mode),
                           progress=False, save=False)
            t = [row["seconds"] for row in res.log]
            runs[name].append({"compiled": res.compiled, "first_step_s": round(t[0], 2),
                               "median_step_s": round(statistics.median(b - a for a, b in zip(t, t[1:])), 4),
                               "final_loss": res.log[-1]["loss"]})
    out = {k: {"median_step_s": statistics.median(r["median_step_s"] for r in v), "runs": v} for k, v in runs.items()}
    out["ratio"] = round(out["compiled"]["median_step_s"] / out["eager"]["median_step_s"], 3)
    return out


def matmul_lever(lm, batch: int, repeats: int) -> dict:
    import torch

    tower = lm.model.visual.train()
    size = tower.image_size[0] if isinstance(tower.image_size, (tuple, list)) else tower.image_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    mk = torch.backends.mkldnn

    def step():
        tower.zero_grad(set_to_none=True)
        tower(x).float().pow(2).mean().backward()

    times = {"ieee": [], "bf16": []}
    try:
        for _ in range(repeats):
            for mode in times:
                mk.matmul.fp32_precision = mk.conv.fp32_precision = mode
                step()  # warm-up of this mode's kernels
                t0 = time.time()
                step()
                step()
                times[mode].append((time.time() - t0) / 2)
    finally:
        mk.matmul.fp32_precision = mk.conv.fp32_precision = "ieee"
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "seconds": {k: round(v, 4) for k, v in med.items()},
            "seconds_each_repeat": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "ratio": round(med["bf16"] / med["ieee"], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-vit")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    import torch

    from clipwb.fileio import atomic_write_text
    from clipwb.models import load_model
    from clipwb.precision import cpu_info, device_slug

    lm = load_model(args.model, "cpu")
    r = {"model": args.model, "cpu": cpu_info(), "torch": torch.__version__, "threads": torch.get_num_threads(),
         "compile": compile_lever(lm, args.steps, args.repeats), "matmul": matmul_lever(lm, args.batch, args.repeats),
         "when": time.strftime("%Y-%m-%d %H:%M")}
    c, m = r["compile"], r["matmul"]
    print(f"{args.model} on {r['cpu']['model']} (fp32, {r['threads']} threads):")
    print(f"  PO step eager {c['eager']['median_step_s']:.3f} s, compiled {c['compiled']['median_step_s']:.3f} s "
          f"(x {c['ratio']:.2f}; each run eager {[r['median_step_s'] for r in c['eager']['runs']]}, compiled "
          f"{[r['median_step_s'] for r in c['compiled']['runs']]}; first step "
          f"{[r['first_step_s'] for r in c['compiled']['runs']]} s compiled)")
    print(f"  tower fwd+bwd at {m['batch']}: fp32 {m['seconds']['ieee']:.3f} s, bf16 inside fp32 matmuls "
          f"{m['seconds']['bf16']:.3f} s (x {m['ratio']:.2f})")
    slug = device_slug(torch.device("cpu"))
    out = Path(args.out) if args.out else HERE / "results" / f"vit_cpu_levers_{slug}.json"
    atomic_write_text(out, json.dumps(r, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
