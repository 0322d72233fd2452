"""Running PO methods side by side from one pretrained model, and parameter sweeps (used by notebook 02 and the
CLI). Each run trains a copy of the model with ``train_po`` and evaluates raw and averaged weights with
``evaluation.typographic.po_eval`` on the held-out sets."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cache import cached_json, fingerprint
from ..evaluation.stats import aggregate_seeds, paired_test, unpack_correct
from ..evaluation.typographic import against, damage, linear_probe_typo, po_eval
from ..losses.po import po_methods
from ..training.po_trainer import po_config, train_po
from .context import RunContext, method_config

__all__ = ["MethodRuns", "RunContext", "best_po_method", "compare_methods", "headline_metrics", "method_config",
           "recovery_table", "sweep", "typo_probe"]


@dataclass
class MethodRuns:
    reference: dict
    # method -> {"raw": metrics, "avg": metrics}; over several training seeds each number is the seeds' mean, with
    # <key>_std, <key>_seeds (every seed's value), <key>_seed_ci and, for a top-1, <key>_ci over images
    results: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)  # method -> per-step log (the first seed's)
    train_seconds: dict = field(default_factory=dict)  # method -> seconds of one run (mean over seeds)
    # per-image correctness for paired tests: "reference" and method -> {"raw"/"avg": {key: mean over seeds}}
    scores: dict = field(default_factory=dict)
    seeds: tuple = ()


def typo_probe(lm, sets: dict, seed: int = 0, cache: bool = True) -> dict:
    """``evaluation.typographic.linear_probe_typo`` of the pretrained model, cached by weights and sets."""
    return cached_json("po-probe", [fingerprint(lm.model), fingerprint(sets), seed],
                       lambda: linear_probe_typo(lm.model, sets, seed=seed), enabled=cache)


def compare_methods(lm, classes, sets: dict, methods=None, profile: str = "embedded", overrides: dict | None = None,
                    per_method: dict | None = None, out_root: str | Path | None = None,
                    progress: bool = True, cache: bool = True, ctx: RunContext | None = None,
                    seeds=None) -> MethodRuns:
    """Train every method of ``methods`` (default: every registered one, ``losses.po.po_methods()``) on
    ``sets["train"]`` from ``lm.model`` with ``po_config(profile, **overrides, **per_method[m])`` and evaluate on
    ``sets["test"]`` / ``sets["test_heldout"]`` / ``sets["test_note"]``.

    With ``cache`` each method's results, log and training time are stored in the run cache (``clipwb.cache``)
    under the hash of its config, the model's weights and the data; a cached method is not retrained (and so
    writes nothing under ``out_root``). ``ctx``: a ``RunContext`` to share (built from the arguments if None).
    ``seeds``: training seeds, each method trained once per seed on the same data (None: the profile's seed);
    results are then the seeds' means with their spread (``evaluation.stats.aggregate_seeds``)."""
    ctx = ctx or RunContext(lm, classes, sets, profile, overrides, per_method, out_root, progress, cache)
    seeds = tuple(seeds) if seeds else (None,)
    ref = ctx.reference
    runs = MethodRuns(reference=ref, scores={"reference": ctx.reference_correct},
                      seeds=tuple(ctx.training_seed(s) for s in seeds))
    for m in (po_methods() if methods is None else methods):
        done = [ctx.po_run(m, s) for s in seeds]
        runs.results[m], runs.scores[m] = {}, {}
        for kind in done[0]["results"]:
            per_seed = [{**d["results"][kind], **against(d["results"][kind], ref)} for d in done]
            runs.results[m][kind], runs.scores[m][kind] = aggregate_seeds(
                per_seed, [unpack_correct(d["correct"][kind]) for d in done], runs.seeds if len(seeds) > 1 else None)
        runs.logs[m] = done[0]["log"]
        runs.train_seconds[m] = float(sum(d["train_seconds"] for d in done) / len(done))
    return runs


def best_po_method(results: dict, key: str = "typo_top1", weights: str | None = None) -> str:
    """The preference method (registered, not a baseline) with the highest ``key`` among ``results`` (method ->
    metrics, or method -> {"raw"/"avg": metrics} with ``weights``); ties go to the earlier registered method."""
    pick = lambda m: results[m][weights] if weights else results[m]  # noqa: E731
    candidates = [m for m in po_methods(baseline=False) if m in results]
    if not candidates:
        raise ValueError(f"no preference method among {list(results)}; registered: {list(po_methods(baseline=False))}")
    return max(candidates, key=lambda m: pick(m)[key])


DAMAGE_KEYS = ("presence_damage", "reading_damage", "presence_recovery", "reading_recovery", "gain_kept")


def recovery_table(runs: MethodRuns) -> list[dict]:
    """Per method and weights, the two damages taken apart (``evaluation.typographic.damage``) on every attack
    family with controls: presence and reading damage after training and their recoveries, clean top-1, attack
    success and the change of clean top-1 from the pretrained model in points (notebook 02's damage table)."""
    ref = runs.reference
    rows = [{"method": "pretrained", "weights": "-", **damage(ref),
             "clean_top1": ref["clean_top1"], "attack_success": ref.get("attack_success"), "clean_change_pts": 0.0}]
    for m, by in runs.results.items():
        for kind, r in by.items():
            rows.append({"method": m, "weights": kind,
                         **{k: v for k, v in r.items() if k.startswith(DAMAGE_KEYS)},
                         "clean_top1": r["clean_top1"], "attack_success": r.get("attack_success"),
                         "clean_change_pts": round(100 * (r["clean_top1"] - ref["clean_top1"]), 1)})
    return rows


def paired_verdicts(scores: dict, pairs, keys=("clean", "typo")) -> list[dict]:
    """For each (A, B) of ``pairs`` and each key: A - B on the same test images with its paired interval and
    whether it is significant at 5 % (``evaluation.stats.paired_test``); ``scores``: name -> {key: per-image
    correctness, or its mean over seeds}."""
    rows = []
    for a, b in pairs:
        for k in keys:
            t = paired_test(scores[a][k], scores[b][k])
            rows.append({"a": a, "b": b, "metric": f"{k}_top1", "diff_pts": round(100 * t["diff"], 1),
                         "ci_pts": [round(100 * t["ci"][0], 1), round(100 * t["ci"][1], 1)],
                         "p_mcnemar": t["p_mcnemar"], "significant": t["significant"]})
    return rows


def po_verdicts(runs: MethodRuns, weights: str = "avg", keys=("clean", "typo")) -> dict:
    """Notebook 02's verdicts on clean and typographic top-1 (``weights`` models): the best PO method (on
    typographic top-1) against CE and the pretrained model, and every PO method against every other."""
    best = best_po_method(runs.results, weights=weights)
    scores = {"pretrained": runs.scores["reference"], **{m: by[weights] for m, by in runs.scores.items()
                                                          if m != "reference"}}
    po = [m for m in po_methods(baseline=False) if m in runs.results]
    pairs = [(best, b) for b in [m for m in runs.results if m not in po] + ["pretrained"]]
    pairs += [(a, b) for i, a in enumerate(po) for b in po[i + 1:]]
    return {"best_po": best, "rows": paired_verdicts(scores, pairs, keys)}


def headline_metrics(runs: MethodRuns, weights: str = "avg") -> dict:
    """The flat keys of notebook 02's metrics: ``<method>_{typo_top1, clean_top1}`` with their intervals
    (``_ci``; over seeds also ``_std`` and ``_seeds``), ``<method>_{reading_recovery, presence_recovery, recovery, kl_drift, train_seconds}`` of the
    ``weights`` model and the pretrained model's ``reference_{typo,clean}_top1`` (with ``_ci``)."""
    out = {}
    for m, by in runs.results.items():
        r = by[weights]
        for k in ("typo_top1", "clean_top1"):
            out[f"{m}_{k}"], out[f"{m}_{k}_ci"] = r[k], r.get(f"{k}_ci")
            if f"{k}_std" in r:
                out[f"{m}_{k}_std"], out[f"{m}_{k}_seeds"] = r[f"{k}_std"], r[f"{k}_seeds"]
        out.update({f"{m}_reading_recovery": r.get("reading_recovery"),
                    f"{m}_presence_recovery": r.get("presence_recovery"), f"{m}_recovery": r.get("recovery"),
                    f"{m}_kl_drift": r["kl_drift"], f"{m}_train_seconds": runs.train_seconds[m]})
    for k in ("typo_top1", "clean_top1"):
        out[f"reference_{k}"], out[f"reference_{k}_ci"] = runs.reference[k], runs.reference.get(f"{k}_ci")
    return out


def sweep(lm, classes, sets: dict, param: str, values, profile: str = "embedded", overrides: dict | None = None,
          weights: str = "avg", progress: bool = True, cache: bool = True) -> list[dict]:
    """One run per value of ``param`` (a POConfig field, e.g. beta or lam) with ``po_config(profile,
    **overrides)``; metrics of the ``weights`` ("avg" or "raw") model; cached as in ``compare_methods``."""
    out = []
    ctx = RunContext(lm, classes, sets, profile, overrides, progress=progress, cache=cache)
    for v in values:
        cfg = po_config(profile, **{**(overrides or {}), param: v})
        ref = ctx.reference

        def run(cfg=cfg):
            res = train_po(lm.model, lm.tokenizer, classes, sets["train"], cfg, progress=progress, save=False)
            model = res.avg_model if weights == "avg" else res.model
            return {"metrics": po_eval(model, lm.tokenizer, classes, sets, ctx.reference_for(cfg), cfg.templates),
                    "train_seconds": res.train_seconds}

        done = cached_json(f"po-sweep-{weights}", ctx.keys.run(cfg), run, enabled=cache)
        r = done["metrics"]
        out.append({param: v, **r, **against(r, ref), "train_seconds": done["train_seconds"]})
    return out
