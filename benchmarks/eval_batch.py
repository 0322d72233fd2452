"""The evaluation encode (``models.inputs.encode_images``) at several batch sizes, side by side in one process
(issue 28: every PO run is evaluated twice, raw and averaged weights, on nine arrays of 1 024 images).

For each tower, ``--n`` attacked world test images are encoded at every batch size in turn, ``--repeats`` times
(the sizes take turns, so that a noisy machine's drift hits all alike), twice: in the fresh process, and after one
training-sized forward + backward (512 images, as a PO step), the state every evaluation of the main job runs in
(the two disagree on CPU: a fresh process favours small batches). Reports the best and median seconds, the ratio to
the first size and whether the features equal the first size's bit for bit (else their largest difference). Prints one table and writes
``benchmarks/results/eval_batch_<cpu or gpu>.json``.

    python benchmarks/eval_batch.py [--models tiny tiny-vit] [--batches 256 128 64 32] [--n 1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(models=("tiny", "tiny-vit"), batches=(256, 128, 64, 32), n: int = 1024, repeats: int = 3) -> dict:
    import torch

    from clipwb.models import load_model
    from clipwb.models.inputs import encode_images, eval_batch, images_to_tensor, model_device
    from clipwb.precision import cpu_info, device_slug
    from clipwb.world import World

    images = World(seed=0).generate(n, "test", "typographic").images
    out = {"n_images": n, "batches": list(batches), "models": {}, "cpu": cpu_info(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "when": time.strftime("%Y-%m-%d %H:%M")}
    for name in models:
        lm = load_model(name)
        m = lm.model.eval()
        encode_images(m, images[:64])  # warm-up
        entry = {"default_batch": eval_batch(m)}
        for state in ("fresh", "after_training_step"):
            if state == "after_training_step":  # what a PO run leaves behind before its evaluation
                m.train()
                m.encode_image(images_to_tensor(images[:512], m)).float().pow(2).mean().backward()
                m.zero_grad(set_to_none=True)
                m.eval()
            secs, feats = {b: [] for b in batches}, {}
            for _ in range(repeats):
                for b in batches:
                    t0 = time.perf_counter()
                    feats[b] = encode_images(m, images, batch_size=b)
                    secs[b].append(time.perf_counter() - t0)
            base = batches[0]
            rows = {}
            for b in batches:
                rows[str(b)] = {"best_s": round(min(secs[b]), 3), "median_s": round(statistics.median(secs[b]), 3),
                                "each_s": [round(s, 3) for s in secs[b]],
                                "ratio_to_first": round(statistics.median(secs[b]) / statistics.median(secs[base]), 3),
                                "bit_equal": bool(torch.equal(feats[b], feats[base])),
                                "max_abs_diff": float((feats[b] - feats[base]).abs().max())}
            entry[state] = rows
        out["device"] = device_slug(model_device(m))
        out["models"][name] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "tiny-vit"])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 128, 64, 32], help="first = the baseline")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from clipwb.fileio import atomic_write_text

    r = run(tuple(args.models), tuple(args.batches), args.n, args.repeats)
    print(f"{r['n_images']} images on {r['cpu']['model']} ({r['threads']} threads), fp32 eval:")
    print(f"{'model':>9} {'state':>20} {'batch':>6} {'median s':>9} {'best s':>7} {'ratio':>6} {'bit-equal':>9}")
    for name, m in r["models"].items():
        for state in ("fresh", "after_training_step"):
            for b, row in m[state].items():
                print(f"{name:>9} {state:>20} {b:>6} {row['median_s']:>9.3f} {row['best_s']:>7.3f} "
                      f"{row['ratio_to_first']:>6.3f} {str(row['bit_equal']):>9}"
                      + ("  <- default" if int(b) == m["default_batch"] else ""))
    out = Path(args.out) if args.out else HERE / "results" / f"eval_batch_{r['device']}.json"
    atomic_write_text(out, json.dumps(r, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
