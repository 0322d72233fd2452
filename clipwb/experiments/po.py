"""Running PO methods side by side from one pretrained model, and parameter sweeps (used by notebook 02 and the
CLI). Each run trains a copy of the model with ``train_po`` and evaluates raw and averaged weights with
``evaluation.typographic.po_eval`` on the held-out sets."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cache import cached_json, fingerprint
from ..evaluation.typographic import linear_probe_typo, po_eval, recovery
from ..losses.po import po_methods
from ..training.po_trainer import po_config, train_po
from .context import RunContext, method_config

__all__ = ["MethodRuns", "RunContext", "best_po_method", "compare_methods", "headline_metrics", "method_config",
           "recovery_table", "sweep", "typo_probe"]


@dataclass
class MethodRuns:
    reference: dict
    results: dict = field(default_factory=dict)  # method -> {"raw": metrics, "avg": metrics}
    logs: dict = field(default_factory=dict)  # method -> per-step log
    train_seconds: dict = field(default_factory=dict)


def typo_probe(lm, sets: dict, seed: int = 0, cache: bool = True) -> dict:
    """``evaluation.typographic.linear_probe_typo`` of the pretrained model, cached by weights and sets."""
    return cached_json("po-probe", [fingerprint(lm.model), fingerprint(sets), seed],
                       lambda: linear_probe_typo(lm.model, sets, seed=seed), enabled=cache)


def compare_methods(lm, classes, sets: dict, methods=None, profile: str = "embedded", overrides: dict | None = None,
                    per_method: dict | None = None, out_root: str | Path | None = None,
                    progress: bool = True, cache: bool = True, ctx: RunContext | None = None) -> MethodRuns:
    """Train every method of ``methods`` (default: every registered one, ``losses.po.po_methods()``) on
    ``sets["train"]`` from ``lm.model`` with ``po_config(profile, **overrides, **per_method[m])`` and evaluate on
    ``sets["test"]`` / ``sets["test_heldout"]`` / ``sets["test_note"]``.

    With ``cache`` each method's results, log and training time are stored in the run cache (``clipwb.cache``)
    under the hash of its config, the model's weights and the data; a cached method is not retrained (and so
    writes nothing under ``out_root``). ``ctx``: a ``RunContext`` to share (built from the arguments if None)."""
    ctx = ctx or RunContext(lm, classes, sets, profile, overrides, per_method, out_root, progress, cache)
    runs = MethodRuns(reference=ctx.reference)
    for m in (po_methods() if methods is None else methods):
        done = ctx.po_run(m)
        runs.results[m] = {kind: {**r, **recovery(r, runs.reference)} for kind, r in done["results"].items()}
        runs.logs[m] = done["log"]
        runs.train_seconds[m] = done["train_seconds"]
    return runs


def best_po_method(results: dict, key: str = "typo_top1", weights: str | None = None) -> str:
    """The preference method (registered, not a baseline) with the highest ``key`` among ``results`` (method ->
    metrics, or method -> {"raw"/"avg": metrics} with ``weights``); ties go to the earlier registered method."""
    pick = lambda m: results[m][weights] if weights else results[m]  # noqa: E731
    candidates = [m for m in po_methods(baseline=False) if m in results]
    if not candidates:
        raise ValueError(f"no preference method among {list(results)}; registered: {list(po_methods(baseline=False))}")
    return max(candidates, key=lambda m: pick(m)[key])


def recovery_table(runs: MethodRuns) -> list[dict]:
    """Per method and weights: recovery on the three held-out families, clean top-1, attack success and the change
    of clean top-1 from the pretrained model in points (notebook 02's recovery table)."""
    ref = runs.reference
    return [{"method": m, "weights": kind, **{k: r.get(k) for k in ("recovery", "recovery_heldout", "recovery_note",
                                                                        "clean_top1", "attack_success")},
             "clean_change_pts": round(100 * (r["clean_top1"] - ref["clean_top1"]), 1)}
            for m, by in runs.results.items() for kind, r in by.items()]


def headline_metrics(runs: MethodRuns, weights: str = "avg") -> dict:
    """The flat keys of notebook 02's metrics: ``<method>_{typo_top1, clean_top1, recovery, kl_drift,
    train_seconds}`` of the ``weights`` model and the pretrained model's ``reference_{typo,clean}_top1``."""
    out = {}
    for m, by in runs.results.items():
        r = by[weights]
        out.update({f"{m}_typo_top1": r["typo_top1"], f"{m}_clean_top1": r["clean_top1"],
                    f"{m}_recovery": r.get("recovery"), f"{m}_kl_drift": r["kl_drift"],
                    f"{m}_train_seconds": runs.train_seconds[m]})
    out["reference_typo_top1"], out["reference_clean_top1"] = runs.reference["typo_top1"], runs.reference["clean_top1"]
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
            return {"metrics": po_eval(model, lm.tokenizer, classes, sets, lm.model, cfg.templates),
                    "train_seconds": res.train_seconds}

        done = cached_json(f"po-sweep-{weights}", ctx.keys.run(cfg), run, enabled=cache)
        r = done["metrics"]
        out.append({param: v, **r, **recovery(r, ref), "train_seconds": done["train_seconds"]})
    return out
