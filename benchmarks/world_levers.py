"""Measure the levers of the embedded world (issue 13): short pretrainings of the tiny CLIP with one world or
pretraining knob changed at a time, each scored with the world's zero-shot suite (clean, attack, control, note,
word alone, gender, occupation) and the linear-probe ceiling on attacked images.

Every variant is a dict of overrides of ``PretrainConfig`` (``world.<field>`` for ``WorldConfig``) applied on top of
``OLD_WORLD``, the world shipped before issue 13 (so the variants measured then stay what they were; the default now is
variant D); results are
appended to benchmarks/results/world_levers.json (one entry per variant, with seconds and the CPU) as they finish,
so an interrupted sweep keeps what it measured.

    python benchmarks/world_levers.py --steps 700 --variants base small_text on_object ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from clipwb.evaluation.typographic import world_probe_ceiling
from clipwb.evaluation.zeroshot import world_zero_shot_suite
from clipwb.fileio import atomic_write_text
from clipwb.precision import cpu_info
from clipwb.training.pretrain import pretrain, pretrain_config
from clipwb.world import World

RESULTS = Path(__file__).resolve().parent / "results"

# the world and curriculum shipped before issue 13 (words 22-36 % of the side anywhere, no unrelated words, no signs)
OLD_WORLD: dict = {"world.mix_object": 0.34, "world.mix_object_text": 0.26, "world.mix_object_other_text": 0.0,
                   "world.mix_text": 0.22, "world.mix_portrait": 0.18, "world.mix_sign": 0.0, "world.text_other_share": 0.0,
                   "world.object_size": (0.22, 0.4), "world.text_size": (0.22, 0.36), "world.text_placement": "anywhere",
                   "early_steps": 500}

VARIANTS: dict[str, dict] = {
    # the world shipped before issue 13 (big words anywhere, no unrelated text in pretraining)
    "old": {},
    "small_text": {"world.text_size": (0.14, 0.22)},
    "small_on_object": {"world.text_size": (0.14, 0.22), "world.text_placement": "object"},
    "small_on_object_other": {"world.text_size": (0.14, 0.22), "world.text_placement": "object",
                              "world.mix_object": 0.28, "world.mix_object_text": 0.20, "world.mix_object_other_text": 0.12,
                              "world.text_other_share": 0.2},
    "mid_anywhere_other": {"world.text_size": (0.16, 0.26), "world.mix_object": 0.28, "world.mix_object_text": 0.20,
                           "world.mix_object_other_text": 0.12, "world.text_other_share": 0.2},
    # candidates of the full-length runs (mixture with unrelated text on objects and as words alone)
    "A_text16-26": {"world.text_size": (0.16, 0.26), "world.text_placement": "object", "world.mix_object": 0.28,
                    "world.mix_object_text": 0.20, "world.mix_object_other_text": 0.10, "world.mix_text": 0.24,
                    "world.text_other_share": 0.15, "early_steps": 600},
    "B_text20-30": {"world.text_size": (0.20, 0.30), "world.text_placement": "object", "world.mix_object": 0.28,
                    "world.mix_object_text": 0.20, "world.mix_object_other_text": 0.10, "world.mix_text": 0.24,
                    "world.text_other_share": 0.15, "early_steps": 600},
    "C_beside": {"world.text_size": (0.22, 0.34), "world.text_placement": "beside", "world.object_size": (0.16, 0.28),
                 "world.mix_object": 0.28, "world.mix_object_text": 0.20, "world.mix_object_other_text": 0.10,
                 "world.mix_text": 0.24, "world.text_other_share": 0.15, "early_steps": 600},
    # C plus "sign" images (another class name written by the object, captioned by the word alone, as alt-text
    # transcribes an image's text), in place of 8 % of plain objects
    "D_beside_signs": {"world.text_size": (0.22, 0.34), "world.text_placement": "beside",
                       "world.object_size": (0.16, 0.28), "world.mix_object": 0.20, "world.mix_object_text": 0.20,
                       "world.mix_object_other_text": 0.10, "world.mix_text": 0.24, "world.mix_sign": 0.08,
                       "world.text_other_share": 0.15, "early_steps": 600},
    # D with more unrelated words on objects (so that text by itself costs less) and more signs
    "E_signs_more_other": {"world.text_size": (0.22, 0.34), "world.text_placement": "beside",
                           "world.object_size": (0.16, 0.28), "world.mix_object": 0.14, "world.mix_object_text": 0.18,
                           "world.mix_object_other_text": 0.18, "world.mix_text": 0.22, "world.mix_sign": 0.10,
                           "world.text_other_share": 0.15, "early_steps": 600},
    "mid_on_object_other": {"world.text_size": (0.16, 0.26), "world.text_placement": "object",
                            "world.mix_object": 0.28, "world.mix_object_text": 0.20, "world.mix_object_other_text": 0.12,
                            "world.text_other_share": 0.2},
}


def apply(overrides: dict, steps: int, n_images: int, eval_every: int = 0):
    overrides = {**OLD_WORLD, **overrides}
    world_over = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("world.")}
    top = {k: v for k, v in overrides.items() if not k.startswith("world.")}
    cfg = pretrain_config("full", steps=steps, n_images=n_images, eval_every=eval_every, eval_n=512, **top)
    if world_over:
        cfg = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, **world_over))
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names in VARIANTS (default: all)")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--n-images", type=int, default=60_000)
    ap.add_argument("--n-eval", type=int, default=1024)
    ap.add_argument("--eval-every", type=int, default=0, help="zero-shot suite on val every N steps (0: at the end)")
    ap.add_argument("--extra", default=None, help="JSON {name: overrides} of further variants")
    ap.add_argument("--out", default=str(RESULTS / "world_levers.json"))
    args = ap.parse_args()
    variants = dict(VARIANTS, **(json.loads(args.extra) if args.extra else {}))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for name in args.variants:
        cfg = apply(variants[name], args.steps, args.n_images, args.eval_every)
        cfg = dataclasses.replace(cfg, early_steps=min(cfg.early_steps, args.steps // 3))
        log_path = out.with_name(f"world_levers_{name}@{args.steps}.log.json")
        t0 = time.time()
        model, log = pretrain(cfg, progress=True, log_path=log_path)
        secs = time.time() - t0
        import open_clip

        world = World(cfg.world)
        ev = world_zero_shot_suite(model, open_clip.get_tokenizer(cfg.model_name), world, n=args.n_eval, split="test")
        ev = {k: round(v, 4) if isinstance(v, float) else v for k, v in ev.items() if not k.startswith("_")}
        ev["probe_ceiling_typo"] = round(world_probe_ceiling(model, world), 4)
        results[f"{name}@{args.steps}"] = {"overrides": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in variants[name].items()},
                                           "steps": args.steps, "n_images": args.n_images, **ev,
                                           "pretrain_seconds": round(secs, 1), "cpu": cpu_info()["model"],
                                           "precision": log["precision"]["name"]}
        print(name, json.dumps(results[f"{name}@{args.steps}"]), flush=True)
        atomic_write_text(out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
