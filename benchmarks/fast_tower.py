"""The PO step with ``training.fast_tower``'s forward (folded BatchNorms, one-query attention pool) against open_clip's
own forward of a ModifiedResNet tower (``POConfig.fast_tower`` "auto" vs "off"), side by side in one process.

For each setting the trainer runs the same short job (world attack pairs, the embedded PO profile's batch of 256
pairs = 512 images a step, ``--steps`` steps from the same seed); the settings take turns, ``--repeats`` times, so
that drift of a noisy machine hits both alike. Reports the median step (log rows after the first), the ratio to
open_clip's forward, the first step's loss under each (DPO's is log 2 at step 0 for both: pi_theta = pi_ref), and how
far the fast run's final weights are from the other's (the same function of the weights; only float rounding
differs). Prints one table and writes ``benchmarks/results/fast_tower_<model>_<cpu or gpu>.json``.

    python benchmarks/fast_tower.py [--model tiny] [--steps 6] [--repeats 3] [--method dpo]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = ("off", "auto")


def _po_forward_chunk():
    spec = importlib.util.spec_from_file_location("po_forward_chunk", HERE / "po_forward_chunk.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(model: str = "tiny", steps: int = 6, repeats: int = 3, method: str = "dpo") -> dict:
    import torch

    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.models import load_model
    from clipwb.precision import cpu_info, device_slug
    from clipwb.training.po_trainer import po_config
    from clipwb.training.trainable import uses_fast_tower
    from clipwb.world import World

    lm = load_model(model)
    cfg = po_config("embedded", method=method)
    if not uses_fast_tower(cfg, lm.model, as_policy=True):
        raise SystemExit(f"{model}'s image tower is not an open_clip ModifiedResNet: fast_tower does not apply")
    classes, sets, _ = attack_arrays("world", world=World(seed=0), n_train=-(-cfg.batch_size * steps // 3), n_test=8,
                                     cfg=AttackSetsConfig(k=3, seed=0), progress=False, storage="memory")
    step_s, finals, logs, res = _po_forward_chunk().alternate(lm, classes, sets["train"], cfg, "fast_tower", SETTINGS,
                                                             repeats)
    first_loss = {s: log[0]["loss"] for s, log in logs.items()}
    med = {s: statistics.median(v) for s, v in step_s.items()}
    moved = max(float((finals["off"][k].float() - lm.model.state_dict()[k].float()).abs().max()) for k in finals["off"])
    diff = max(float((finals["auto"][k].float() - finals["off"][k].float()).abs().max()) for k in finals["off"])
    # over all weights together: how far the two runs end apart against how far training moved them
    sq = lambda a, b: sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in finals["off"])  # noqa: E731
    rel = math.sqrt(sq(finals["auto"], finals["off"]) / sq(finals["off"], lm.model.state_dict()))
    device = next(lm.model.parameters()).device
    return {"device": device_slug(device), "model": model, "method": method, "steps": res.steps,
            "images_per_step": 2 * cfg.batch_size, "step_seconds": {s: round(med[s], 4) for s in SETTINGS},
            "step_seconds_each_repeat": {s: [round(x, 4) for x in v] for s, v in step_s.items()},
            "fast_over_openclip": round(med["auto"] / med["off"], 3),
            "first_loss": first_loss, "log2": math.log(2),
            "final_weights_max_abs_diff": diff, "final_weights_max_abs_moved": moved,
            "final_weights_l2_diff_over_l2_moved": rel,
            "cpu": cpu_info(), "precision": res.precision, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "when": time.strftime("%Y-%m-%d %H:%M")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="dpo")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from clipwb.fileio import atomic_write_text

    r = run(args.model, args.steps, args.repeats, args.method)
    print(f"{r['model']} on {r['cpu']['model']} (native bf16 {r['cpu']['bf16_native']}, {r['precision']['name']}), "
          f"{r['images_per_step']} images a step, {r['method']}:")
    for s in SETTINGS:
        name = "open_clip forward (off)" if s == "off" else "fast_tower (auto)"
        print(f"  {name:24s} step {r['step_seconds'][s]:.3f} s  first loss {r['first_loss'][s]:.7f}")
    print(f"fast / open_clip: {r['fast_over_openclip']:.3f}; final weights differ by at most "
          f"{r['final_weights_max_abs_diff']:.2e} (they moved up to {r['final_weights_max_abs_moved']:.2e}); "
          f"L2 distance between the two runs / L2 distance travelled: {r['final_weights_l2_diff_over_l2_moved']:.3f}")
    out = Path(args.out) if args.out else HERE / "results" / f"fast_tower_{r['model']}_{r['device']}.json"
    atomic_write_text(out, json.dumps(r, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
