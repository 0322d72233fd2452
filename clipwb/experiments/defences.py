"""Typographic-attack defences side by side on one pretrained model, one data set and one evaluation (notebook 07).

Every defence becomes a ``ZeroShotClassifier`` and is scored by ``evaluation.typographic.classifier_eval`` on the
held-out sets, against the pretrained model (recovery, KL drift). Defences that train get the PO profile's budget:
the same training pairs, the same number of epochs and pairs per step (``po_config(profile)``). Strengths that a
defence leaves open (PAINT's alpha, the steering map's t) are chosen on training images only, by one rule
(``defences.interpolation.select_strength``): the highest typographic top-1 whose clean top-1 stays within
``clean_tolerance`` of the zero-shot model's. Each defence's result is stored in the run cache; PO runs share
their cache entries with notebook 02, so the same settings are not retrained."""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import profiles
from ..cache import cached_json, cached_tensors
from ..config import with_overrides
from ..defences.heads import greedy_ablation
from ..defences.interpolation import interpolate, select_strength
from ..defences.prefix import PrefixConfig, train_prefix
from ..defences.projection import ProjectionConfig, train_projection
from ..evaluation.classifier import ZeroShotClassifier, model_classifier
from ..evaluation.typographic import classifier_eval, recovery
from ..models.inputs import encode_images
from ..steering.linear import LinearMapConfig, StrengthFamily, steer, train_linear_map
from ..training.po_trainer import po_config, result_key, set_trainable, train_po
from .po import _reference_eval, _RunKeys, compare_methods, method_config

DEFENCES = ("zero_shot", "ce", "paint_ce", "paint_dpo", "defense_prefix", "projection", "head_ablation", "dpo", "ipo",
            "kto", "steering")
KEYS = ("clean_top1", "typo_top1", "typo_heldout_top1", "typo_note_top1", "attack_success", "recovery", "kl_drift",
        "trainable_params", "train_seconds")


def prefix_config(profile: str = "reference", **overrides) -> PrefixConfig:
    """Defense-Prefix settings of a PO profile (``profiles.PROFILES["defense_prefix"]``) with overrides."""
    return with_overrides(PrefixConfig(), {**profiles.profile("defense_prefix", profile), **overrides})


@dataclass
class DefenceRuns:
    results: dict = field(default_factory=dict)  # defence -> KEYS (+ the full classifier_eval metrics)
    curves: dict = field(default_factory=dict)  # paint_ce / paint_dpo / steering -> rows along the strength
    details: dict = field(default_factory=dict)  # chosen strengths, ablated heads, configs

    def table(self) -> dict:
        return {d: {k: r.get(k) for k in KEYS} for d, r in self.results.items()}


class _Features:
    """The pretrained model's normalised image features of every array it is asked for, computed once per call
    (defences that keep the image tower reuse them)."""

    def __init__(self, model):
        self.model, self._memo = model, {}

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        key = (id(images), images.shape)
        if key not in self._memo:
            self._memo[key] = (images, encode_images(self.model, images))  # keep the array alive: ids stay unique
        return self._memo[key][1]


def _selection(sets: dict, n: int, seed: int) -> dict:
    """A seeded subset of the training pairs on which strengths are chosen and heads are scored."""
    tr = sets["train"]
    idx = np.sort(np.random.default_rng([seed, 7]).permutation(len(tr["true"]))[:n])
    return {k: np.asarray(tr[k])[idx] for k in ("clean", "typo", "true", "written")}


def _train_scores(clf: ZeroShotClassifier, sel: dict) -> dict:
    y = sel["true"]
    return {"clean_top1": float((clf.cosines(sel["clean"]).argmax(-1).numpy() == y).mean()),
            "typo_top1": float((clf.cosines(sel["typo"]).argmax(-1).numpy() == y).mean())}


def _count(model, mode: str) -> int:
    m = copy.deepcopy(model)
    names = set(set_trainable(m, mode))
    return int(sum(p.numel() for n, p in m.named_parameters() if n in names))


def compare_defences(lm, classes, sets: dict, profile: str = "embedded", overrides: dict | None = None,
                     per_method: dict | None = None, alphas=(0.25, 0.5, 0.75), ts=(0.5, 1.0, 1.5, 2.0),
                     select_n: int = 1024, clean_tolerance: float = 0.01, seed: int = 0, only=DEFENCES,
                     progress: bool = True, cache: bool = True) -> DefenceRuns:
    """Run every defence of ``only`` (names of ``DEFENCES``) from ``lm`` on ``sets`` (``train`` pairs, held-out
    ``test``, ``test_heldout``, ``test_note``) and evaluate them alike; see the module docstring."""
    unknown = [d for d in only if d not in DEFENCES]
    if unknown:
        raise ValueError(f"unknown defences {unknown}; choose from {list(DEFENCES)}")
    overrides = overrides or {}
    base_cfg = po_config(profile, **overrides)
    templates = base_cfg.templates
    keys = _RunKeys(lm, classes, sets)
    feats = _Features(lm.model)
    base = model_classifier(lm.model, lm.tokenizer, classes, templates)
    base = ZeroShotClassifier(feats, base.text, base.scale)
    sel = _selection(sets, select_n, seed)
    floor = _train_scores(base, sel)["clean_top1"] - clean_tolerance
    n_pairs = len(sets["train"]["true"])
    steps = max(1, n_pairs // base_cfg.batch_size) * base_cfg.epochs
    out = DefenceRuns()
    reference = _reference_eval(lm, classes, sets, templates, keys, cache)

    def done(name, metrics, trainable, seconds, **details):
        out.results[name] = {**metrics, **recovery(metrics, reference), "trainable_params": int(trainable),
                             "train_seconds": float(seconds)}
        if details:
            out.details[name] = details

    def evaluate(clf):
        return classifier_eval(clf, sets, base)

    def cached(name, key, fn):
        return cached_json(f"defence-{name}", [key, keys.base, list(templates)], fn, enabled=cache)

    if "zero_shot" in only:
        done("zero_shot", reference, 0, 0.0)

    po_methods = [m for m in ("ce", "dpo", "ipo", "kto") if m in only]
    paint = [m for m in ("ce", "dpo") if f"paint_{m}" in only]
    if po_methods or paint:
        runs = compare_methods(lm, classes, sets, sorted(set(po_methods) | set(paint)), profile, overrides,
                               per_method, progress=progress, cache=cache)
        for m in po_methods:
            cfg = method_config(profile, m, overrides, per_method)
            done(m, runs.results[m]["raw"], _count(lm.model, cfg.train), runs.train_seconds[m], weights="raw")
        for m in paint:
            cfg = method_config(profile, m, overrides, per_method)

            def run_paint(cfg=cfg, m=m):
                ft = fine_tuned(lm, classes, sets, cfg, keys, progress, cache)
                t0 = time.time()
                rows = []
                for a in (0.0, *alphas, 1.0):
                    model = lm.model if a == 0.0 else ft if a == 1.0 else interpolate(lm.model, ft, a)
                    clf = model_classifier(model, lm.tokenizer, classes, templates) if a else base
                    test = reference if a == 0.0 else evaluate(clf)
                    rows.append({"alpha": a, "train": _train_scores(clf, sel), **test})
                pick = select_strength([{"alpha": r["alpha"], **r["train"]} for r in rows], floor)
                return {"rows": rows, "alpha": pick["alpha"], "seconds": time.time() - t0}

            res = cached(f"paint-{m}", [result_key(cfg), list(alphas), select_n, seed, clean_tolerance],
                         run_paint)
            row = next(r for r in res["rows"] if r["alpha"] == res["alpha"])
            done(f"paint_{m}", {k: v for k, v in row.items() if k not in ("alpha", "train")},
                 _count(lm.model, cfg.train), runs.train_seconds[m] + res["seconds"], alpha=res["alpha"])
            out.curves[f"paint_{m}"] = [_curve_row(r, reference) for r in res["rows"]]

    tr = sets["train"]
    if "defense_prefix" in only:
        pcfg = prefix_config(profile, batch_size=base_cfg.batch_size, epochs=base_cfg.epochs, seed=base_cfg.seed)

        def run_prefix():
            res = train_prefix(lm.model, lm.tokenizer, classes, feats(tr["clean"]), feats(tr["typo"]), tr["true"],
                               pcfg, templates, progress)
            return {"vector": res.vector.tolist(), "metrics": evaluate(_prefix_classifier(lm, classes, res.vector,
                                                                                       templates, feats)),
                    "seconds": res.train_seconds, "final": res.log[-1]}

        res = cached("prefix", dataclasses.asdict(pcfg), run_prefix)
        done("defense_prefix", res["metrics"], len(res["vector"]), res["seconds"], config=dataclasses.asdict(pcfg),
             final_step=res["final"])

    if "projection" in only:
        jcfg = ProjectionConfig(batch_size=base_cfg.batch_size, epochs=base_cfg.epochs, seed=base_cfg.seed)

        def run_projection():
            res = train_projection(feats(tr["clean"]), feats(tr["typo"]), tr["true"], base.text, float(base.scale),
                                   jcfg, progress)
            return {"metrics": evaluate(res.classifier(base)), "seconds": res.train_seconds,
                    "shape": list(res.W.shape), "final": res.log[-1]}

        res = cached("projection", dataclasses.asdict(jcfg), run_projection)
        done("projection", res["metrics"], int(np.prod(res["shape"])), res["seconds"], config=dataclasses.asdict(jcfg),
             final_step=res["final"])

    if "head_ablation" in only:
        def run_heads():
            half = len(sel["true"]) // 2
            res = greedy_ablation(lm.model, base.text, sel["typo"][:half], sel["true"][:half], sel["written"][:half],
                                  sel["clean"][half:], sel["true"][half:], tolerance=clean_tolerance,
                                  progress=progress)
            from ..defences.heads import ablate

            model = ablate(lm.model, res.heads)
            return {"metrics": evaluate(model_classifier(model, lm.tokenizer, classes, templates)),
                    "seconds": res.seconds, "heads": [h.name for h in res.heads], "scores": res.scores,
                    "log": res.log}

        res = cached("heads", [select_n, seed, clean_tolerance], run_heads)
        done("head_ablation", res["metrics"], 0, res["seconds"], heads=res["heads"], scores=res["scores"],
             log=res["log"])

    if "steering" in only:
        scfg = LinearMapConfig(steps=steps, batch_size=base_cfg.batch_size, lr=0.02, lam=5.0, nu=0.1,
                               seed=base_cfg.seed)

        def run_steering():
            t0 = time.time()
            W, _ = train_linear_map(feats(tr["typo"]), base.text, tr["true"], tr["written"], float(base.scale),
                                    keep=[(feats(tr["clean"]), base.text)], cfg=scfg, progress=progress)
            seconds = time.time() - t0
            fam = StrengthFamily(W)
            rows = []
            for t in (0.0, *ts):
                W_t = fam.at(float(t))
                clf = ZeroShotClassifier(lambda x, W_t=W_t: steer(feats(x), W_t), base.text, base.scale)
                rows.append({"t": float(t), "train": _train_scores(clf, sel), **evaluate(clf)})
            pick = select_strength([{"t": r["t"], **r["train"]} for r in rows], floor, key="t")
            return {"rows": rows, "t": pick["t"], "seconds": seconds}

        res = cached("steering", [dataclasses.asdict(scfg), list(ts), select_n, seed, clean_tolerance], run_steering)
        row = next(r for r in res["rows"] if r["t"] == res["t"])
        d = len(base.text[0])
        done("steering", {k: v for k, v in row.items() if k not in ("t", "train")}, d * d, res["seconds"],
             t=res["t"], config=dataclasses.asdict(scfg))
        out.curves["steering"] = [_curve_row(r, reference) for r in res["rows"]]
    out.results = {d: out.results[d] for d in DEFENCES if d in out.results}
    return out


def _curve_row(r: dict, reference: dict) -> dict:
    """A strength's test metrics with recovery, and the training-image scores it was chosen on (``select_*``)."""
    return {**{k: v for k, v in r.items() if k != "train"}, **recovery(r, reference),
            **{f"select_{k}": v for k, v in r["train"].items()}}


def _prefix_classifier(lm, classes, vector, templates, feats) -> ZeroShotClassifier:
    from ..defences.prefix import prefix_text_features

    with torch.no_grad():
        text = prefix_text_features(lm.model, lm.tokenizer, classes, torch.as_tensor(vector), templates)
        scale = lm.model.logit_scale.exp().float()
    return ZeroShotClassifier(feats, text, scale)


def fine_tuned(lm, classes, sets: dict, cfg, keys: _RunKeys | None = None, progress: bool = True,
               cache: bool = True):
    """The raw fine-tuned model of a PO run (``train_po`` with ``cfg`` on ``sets["train"]``): its weights are
    stored in the run cache under the run's key (``experiments.po.compare_methods`` stores them when it trains)."""
    keys = keys or _RunKeys(lm, classes, sets)

    def run():
        res = train_po(lm.model, lm.tokenizer, classes, sets["train"], cfg, progress=progress, save=False,
                       model_name=lm.name)
        return res.model.state_dict()

    sd = cached_tensors("po-weights-raw", keys.run(cfg), run, enabled=cache)
    model = copy.deepcopy(lm.model)
    model.load_state_dict(sd)
    return model.eval()
