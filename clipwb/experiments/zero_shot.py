"""Zero-shot evaluations of a pretrained model as notebooks 00 and 01 report them, each stored in the run cache
(``clipwb.cache``) under the hash of the model's weights and of the data, so that a second run of the main
job with nothing changed reads them back instead of re-encoding thousands of images."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..evaluation.typographic import typographic_metrics, world_probe_ceiling
from ..evaluation.zeroshot import world_zero_shot_suite
from ..cache import cached_json, fingerprint


def world_suite(lm, world, n_eval: int, seed: int = 0, split: str = "test",
                cache: bool = True) -> tuple[dict, dict]:
    """``evaluation.zeroshot.world_zero_shot_suite`` on ``n_eval`` images of each kind, plus the linear-probe
    ceiling on attacked images (``probe_ceiling_typo``: ``2 n_eval`` training and ``n_eval`` test images); returns
    (metrics, predictions), the predictions int arrays per image (``world_zero_shot_suite``'s: confusion matrices,
    paired comparisons of two models on the same images)."""
    def run():
        metrics, preds = world_zero_shot_suite(lm.model, lm.tokenizer, world, n=n_eval, split=split,
                                               return_predictions=True)
        metrics["probe_ceiling_typo"] = world_probe_ceiling(lm.model, world, n_train=2 * n_eval, n_test=n_eval,
                                                            seed=seed)
        return {"metrics": metrics, "predictions": {k: np.asarray(v).tolist() for k, v in preds.items()}}

    # "preds-2": the stored predictions include pred_control (suites stored before it are recomputed once)
    key = [fingerprint(lm.model), dataclasses.asdict(world.config), n_eval, seed, split, "preds-2"]
    done = cached_json("world-suite", key, run, enabled=cache)
    return done["metrics"], {k: np.asarray(v) for k, v in done["predictions"].items()}


def sets_table(lm, classes, data: dict, cache: bool = True) -> dict:
    """Zero-shot metrics of every built set of ``data`` (name -> arrays as from ``TypographicDataset.arrays``):
    clean, control (where the set has control images), typographic top-1 and attack success, and the number of
    attacked variants."""
    def run():
        table = {}
        for name, d in data.items():
            m = typographic_metrics(lm.model, lm.tokenizer, classes, d["typo"], d["true"], d["written"],
                                    clean=d["clean"], control=d.get("control"))
            table[name] = {"clean_top1": m["clean_top1"], "control_top1": m.get("control_top1"),
                           "typo_top1": m["typo_top1"], "attack_success_rate": m["attack_success_rate"],
                           "n_variants": m["n"]}
        return table

    arrays = {n: {k: d[k] for k in ("clean", "typo", "true", "written", "control") if k in d} for n, d in data.items()}
    return cached_json("sets-table", [fingerprint(lm.model), list(classes), fingerprint(arrays)], run, enabled=cache)


def real_sets_table(lm, real_sets: dict, image_size: int | None = None, progress: bool = True) -> dict:
    """Typographic top-1, attack success, n and skipped files of the model on every real typographic set given
    (name -> folder with ``labels.csv``; ``data.real.load_real_typographic``), images resized to ``image_size``
    (default 224)."""
    from ..data.real import load_real_typographic

    rows = {}
    for name, path in real_sets.items():
        rs = load_real_typographic(path, name)
        arr = rs.arrays(size=image_size or 224, progress=progress)
        m = typographic_metrics(lm.model, lm.tokenizer, rs.classes, arr["typo"], arr["true"], arr["written"])
        rows[name] = {"typo_top1": m["typo_top1"], "attack_success_rate": m["attack_success_rate"], "n": m["n"],
                      "skipped_corrupt": len(arr["skipped_corrupt"])}
    return rows


# what the embedded world's models are built to show (issue targets), on the world suite's metrics: (key, op, bound)
WORLD_TARGETS = (("zero_shot_clean_top1", ">=", 0.90), ("zero_shot_typo_top1", "<=", 0.45),
                 ("reading_damage", ">=", 0.20), ("presence_damage", "<=", 0.20), ("gender_top1", ">=", 0.85),
                 ("occupation_top1", ">=", 0.85))


def world_checks(suites: dict[str, dict]) -> list[dict]:
    """Side by side, per model (name -> ``world_suite`` metrics): every check with its value, the presence damage
    (clean - control) and the reading damage (control - attack) derived from them, the target and whether each
    model meets it."""
    derived = {n: {**m, "presence_damage": m["zero_shot_clean_top1"] - m["zero_shot_control_top1"],
                   "reading_damage": m["zero_shot_control_top1"] - m["zero_shot_typo_top1"]}
               for n, m in suites.items()}
    targets = {k: (op, b) for k, op, b in WORLD_TARGETS}
    keys = ["zero_shot_clean_top1", "zero_shot_control_top1", "zero_shot_typo_top1", "attack_success",
            "presence_damage", "reading_damage", "text_read_top1", "probe_ceiling_typo", "gender_top1",
            "occupation_top1"]
    rows = []
    for k in keys:
        row = {"check": k, **{n: round(float(d[k]), 4) for n, d in derived.items()}}
        if k in targets:
            op, b = targets[k]
            row["target"] = f"{op} {b}"
            for n, d in derived.items():
                row[f"{n} meets"] = bool(d[k] >= b if op == ">=" else d[k] <= b)
        rows.append(row)
    return rows
