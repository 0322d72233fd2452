"""Running PO methods side by side from one pretrained model, and parameter sweeps (used by notebook 02 and the
CLI). Each run trains a copy of the model with ``train_po`` and evaluates raw and averaged weights with
``evaluation.typographic.po_eval`` on the held-out sets."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation.typographic import po_eval, recovery
from ..training.po_trainer import po_config, train_po


@dataclass
class MethodRuns:
    reference: dict
    results: dict = field(default_factory=dict)  # method -> {"raw": metrics, "avg": metrics}
    logs: dict = field(default_factory=dict)  # method -> per-step log
    train_seconds: dict = field(default_factory=dict)


def compare_methods(lm, classes, sets: dict, methods, profile: str = "embedded", overrides: dict | None = None,
                    per_method: dict | None = None, out_root: str | Path | None = None,
                    progress: bool = True) -> MethodRuns:
    """Train every method of ``methods`` on ``sets["train"]`` from ``lm.model`` with ``po_config(profile,
    **overrides, **per_method[m])`` and evaluate on ``sets["test"]`` / ``sets["test_heldout"]``."""
    overrides = overrides or {}
    templates = po_config(profile, **overrides).templates
    runs = MethodRuns(reference=po_eval(lm.model, lm.tokenizer, classes, sets, lm.model, templates))
    for m in methods:
        cfg = po_config(profile, **{**overrides, "method": m, **(per_method or {}).get(m, {})})
        res = train_po(lm.model, lm.tokenizer, classes, sets["train"], cfg,
                       out_dir=Path(out_root) / m if out_root else None, progress=progress, model_name=lm.name)
        runs.results[m] = {}
        for kind, model in (("raw", res.model), ("avg", res.avg_model)):
            r = po_eval(model, lm.tokenizer, classes, sets, lm.model, cfg.templates)
            runs.results[m][kind] = {**r, **recovery(r, runs.reference)}
        runs.logs[m] = res.log
        runs.train_seconds[m] = res.train_seconds
    return runs


def sweep(lm, classes, sets: dict, param: str, values, profile: str = "embedded", overrides: dict | None = None,
          weights: str = "avg", progress: bool = True) -> list[dict]:
    """One run per value of ``param`` (a POConfig field, e.g. beta or lam) with ``po_config(profile,
    **overrides)``; metrics of the ``weights`` ("avg" or "raw") model."""
    out = []
    ref = None
    for v in values:
        cfg = po_config(profile, **{**(overrides or {}), param: v})
        res = train_po(lm.model, lm.tokenizer, classes, sets["train"], cfg, progress=progress, save=False)
        model = res.avg_model if weights == "avg" else res.model
        if ref is None:
            ref = po_eval(lm.model, lm.tokenizer, classes, sets, None, cfg.templates)
        r = po_eval(model, lm.tokenizer, classes, sets, lm.model, cfg.templates)
        out.append({param: v, **r, **recovery(r, ref), "train_seconds": res.train_seconds})
    return out
