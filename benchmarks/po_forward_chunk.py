"""The PO step with the image tower's forward pass split into chunks (``POConfig.forward_chunk``) against one pass
over the whole batch, side by side in one process (issue 28: the ViT tower's steps were 3.3x the conv tower's).

For each chunk size the trainer runs the same short job (world attack pairs, the embedded PO profile's batch of
256 pairs = 512 images a step, ``--steps`` steps from the same seed); the sizes take turns, ``--repeats`` times, so
that drift of a noisy machine hits all of them alike. Reports the median step (log rows after the first), the ratio
to the unchunked step, and how far the chunked run's final weights are from the unchunked ones (the loss is the same
function of the weights; only float rounding differs). Prints one table and writes
``benchmarks/results/po_forward_chunk_<model>_<cpu or gpu>.json``.

    python benchmarks/po_forward_chunk.py [--model tiny-vit] [--chunks 0 128 64] [--steps 6] [--repeats 3]
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


def alternate(lm, classes, train, cfg, field: str, values, repeats: int):
    """The trainer's short job (one epoch of ``train`` with ``cfg``) once per value of the POConfig ``field``, the
    values taking turns ``repeats`` times. Returns ({value: [median step seconds per repeat]}, {value: final state dict
    of the first repeat}, {value: the first repeat's log})."""
    from clipwb.training.po_trainer import train_po

    step_s = {v: [] for v in values}
    finals, logs = {}, {}
    for r in range(repeats):
        for v in values:
            res = train_po(lm.model, lm.tokenizer, classes, train, dataclasses.replace(cfg, epochs=1, **{field: v}),
                           progress=False, save=False)
            t = [row["seconds"] for row in res.log]
            step_s[v].append(statistics.median(b - a for a, b in zip(t, t[1:])))
            if r == 0:
                finals[v] = {k: x.detach().clone() for k, x in res.model.state_dict().items()}
                logs[v] = res.log
    return step_s, finals, logs, res


def run(model: str = "tiny-vit", chunks=(0, 128, 64), steps: int = 6, repeats: int = 3, method: str = "dpo") -> dict:
    import torch

    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.models import load_model
    from clipwb.precision import cpu_info, device_slug
    from clipwb.training.po_trainer import po_config
    from clipwb.training.trainable import forward_chunk
    from clipwb.world import World

    lm = load_model(model)
    cfg = po_config("embedded", method=method)
    n_pairs = cfg.batch_size * steps
    classes, sets, _ = attack_arrays("world", world=World(seed=0), n_train=-(-n_pairs // 3), n_test=8,
                                     cfg=AttackSetsConfig(k=3, seed=0), progress=False, storage="memory")
    step_s, finals, _, res = alternate(lm, classes, sets["train"], cfg, "forward_chunk", chunks, repeats)
    base = chunks[0]
    med = {c: statistics.median(v) for c, v in step_s.items()}
    diff = {c: max(float((finals[c][k].float() - finals[base][k].float()).abs().max()) for k in finals[base])
            for c in chunks}
    device = next(lm.model.parameters()).device
    return {"device": device_slug(device), "model": model, "method": method,
            "auto_chunk": forward_chunk("auto", lm.model, device), "steps": res.steps, "images_per_step":
            2 * cfg.batch_size, "step_seconds": {str(c): round(med[c], 4) for c in chunks},
            "step_seconds_each_repeat": {str(c): [round(x, 4) for x in v] for c, v in step_s.items()},
            "ratio_to_unchunked": {str(c): round(med[c] / med[base], 3) for c in chunks},
            "final_weights_max_abs_diff": {str(c): diff[c] for c in chunks},
            "cpu": cpu_info(), "precision": res.precision, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "when": time.strftime("%Y-%m-%d %H:%M")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-vit")
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 128, 64], help="first = the baseline (0: no chunks)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="dpo")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from clipwb.fileio import atomic_write_text

    r = run(args.model, tuple(args.chunks), args.steps, args.repeats, args.method)
    print(f"{r['model']} on {r['cpu']['model']} ({r['precision']['name']}), {r['images_per_step']} images a step:")
    print(f"{'chunk':>6} {'step s':>8} {'ratio':>6} {'max |dw|':>10}")
    for c in args.chunks:
        print(f"{c:>6} {r['step_seconds'][str(c)]:>8.3f} {r['ratio_to_unchunked'][str(c)]:>6.3f} "
              f"{r['final_weights_max_abs_diff'][str(c)]:>10.2e}")
    out = Path(args.out) if args.out else HERE / "results" / f"po_forward_chunk_{r['model']}_{r['device']}.json"
    atomic_write_text(out, json.dumps(r, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
