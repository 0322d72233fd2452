"""Two models' world checks on the same held-out images, with paired intervals of their differences (issue 27: is a
new tiny-vit better than the one it replaces, check by check?).

Both models see the same ``--n`` world test images of each kind (clean objects, the typographic attack, its control:
the same objects with a word that names no class): the zero-shot suite's own images, whose per-image predictions
``world_suite`` keeps (cached); per image and model, correct or not. The paired differences
(A - B) of clean, control and attack top-1, and of the two damages the world is built to show, per image:
presence damage (clean - control: what text that names no class costs) and reading damage (control - attack: what
reading a *class* name adds), each with a paired bootstrap interval over images (``evaluation.stats.paired_test``).
Beside them each model's whole zero-shot suite (``experiments.zero_shot.world_suite``) and ``world_checks`` table.

    python benchmarks/world_checks_paired.py A=SPEC B=SPEC [--n 2048] [--out results/world_checks_paired.json]

e.g. the shipped tiny-vit against the stage 2 it replaced, read back from git:
    git show d870891:clipwb/models/weights/clipwb-tiny-vit-8b290093415e.safetensors > /tmp/old.safetensors
    python benchmarks/world_checks_paired.py new=tiny-vit old=clipwb-tiny-vit:/tmp/old.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("object", "object_other_text", "typographic")


def paired_damages(a: dict, b: dict) -> dict:
    """Paired differences A - B from per-image correctness (kind -> bool array over the same images): top-1 of each
    kind, presence damage (object - object_other_text) and reading damage (object_other_text - typographic)."""
    from clipwb.evaluation.stats import paired_test

    missing = [k for k in KINDS if k not in a or k not in b]
    if missing:
        raise ValueError(f"per-image correctness of {missing} missing: both models need {list(KINDS)}")
    f = {n: {k: np.asarray(c[k], dtype=np.float64) for k in KINDS} for n, c in (("a", a), ("b", b))}
    out = {k: paired_test(f["a"][k], f["b"][k]) for k in KINDS}
    pres = {n: d["object"] - d["object_other_text"] for n, d in f.items()}
    read = {n: d["object_other_text"] - d["typographic"] for n, d in f.items()}
    out["presence_damage"] = paired_test(pres["a"], pres["b"])
    out["reading_damage"] = paired_test(read["a"], read["b"])
    return out


def per_image_correct(preds: dict) -> dict:
    """Per-image correctness of each kind of ``KINDS`` from ``world_suite``'s predictions (the control and attack
    images are the clean objects with a word written on them: one true class per index)."""
    y = np.asarray(preds["true_clean"])
    return {"object": np.asarray(preds["pred_clean"]) == y, "object_other_text": np.asarray(preds["pred_control"]) == y,
            "typographic": np.asarray(preds["pred_typo"]) == y}


def main(argv=None) -> int:
    from clipwb.evaluation.stats import wilson_ci
    from clipwb.experiments.zero_shot import world_checks, world_suite
    from clipwb.fileio import atomic_write_text
    from clipwb.models import load_model
    from clipwb.precision import cpu_info
    from clipwb.world import World, WorldConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs=2, help="NAME=SPEC twice (a clipwb model spec: tiny-vit, NAME:/path/file, ...)")
    ap.add_argument("--n", type=int, default=2048, help="test images per kind (notebook 00's full profile: 2048)")
    ap.add_argument("--seed", type=int, default=0, help="world seed of the test images")
    ap.add_argument("--out", default=str(RESULTS / "world_checks_paired.json"))
    a = ap.parse_args(argv)
    specs = {}
    for m in a.models:
        if "=" not in m:
            raise SystemExit(f"{m!r}: write each model as NAME=SPEC, e.g. new=tiny-vit")
        name, spec = m.split("=", 1)
        specs[name] = spec
    if len(specs) != 2:
        raise SystemExit("give the two models different names")
    world = World(WorldConfig(seed=a.seed))
    suites, correct, top1 = {}, {}, {}
    for name, spec in specs.items():
        suites[name], preds = world_suite(load_model(spec), world, a.n, a.seed)  # cached: the suite's own images
        correct[name] = per_image_correct(preds)
        top1[name] = {k: {"top1": float(c.mean()), "ci": wilson_ci(int(c.sum()), a.n)} for k, c in correct[name].items()}
    (na, nb) = specs
    paired = paired_damages(correct[na], correct[nb])
    out = {"what": f"{na} - {nb} on the same {a.n} world test images per kind (seed {a.seed}); paired bootstrap "
                   f"intervals over images", "models": specs, "cpu": cpu_info(), "top1": top1, "paired": paired,
           "world_checks": world_checks(suites), "suites": suites}
    for k, v in paired.items():
        print(f"{na} - {nb}  {k:18s} {v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
              f"{'  significant' if v['significant'] else ''}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(out, indent=1, default=float))
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
