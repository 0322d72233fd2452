"""Running PO methods side by side from one pretrained model, and parameter sweeps (used by notebook 02 and the
CLI). Each run trains a copy of the model with ``train_po`` and evaluates raw and averaged weights with
``evaluation.typographic.po_eval`` on the held-out sets."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation.typographic import linear_probe_typo, po_eval, recovery
from ..training.po_trainer import po_config, result_key, train_po
from ..cache import cached_json, cached_tensors, fingerprint


@dataclass
class MethodRuns:
    reference: dict
    results: dict = field(default_factory=dict)  # method -> {"raw": metrics, "avg": metrics}
    logs: dict = field(default_factory=dict)  # method -> per-step log
    train_seconds: dict = field(default_factory=dict)


class _RunKeys:
    """What determines a PO run's results: its config, the model's weights, the classes and every array of the
    sets (training pairs and held-out sets); the two content hashes are computed once per call. The cache dir is
    per machine, so ``precision="auto"`` means the machine's own choice there."""

    def __init__(self, lm, classes, sets: dict):
        self.base = [fingerprint(lm.model), list(classes), fingerprint(sets)]

    def run(self, cfg) -> list:
        return [result_key(cfg), *self.base]

    def reference(self, templates) -> list:
        return [list(templates), *self.base]


def _reference_eval(lm, classes, sets: dict, templates, keys: _RunKeys, cache: bool) -> dict:
    """``po_eval`` of the pretrained model itself (the "before" of recovery; its kl_drift is 0), cached."""
    return cached_json("po-reference", keys.reference(templates),
                       lambda: po_eval(lm.model, lm.tokenizer, classes, sets, lm.model, templates), enabled=cache)


def typo_probe(lm, sets: dict, seed: int = 0, cache: bool = True) -> dict:
    """``evaluation.typographic.linear_probe_typo`` of the pretrained model, cached by weights and sets."""
    return cached_json("po-probe", [fingerprint(lm.model), fingerprint(sets), seed],
                       lambda: linear_probe_typo(lm.model, sets, seed=seed), enabled=cache)


def method_config(profile: str, method: str, overrides: dict | None = None, per_method: dict | None = None):
    """``po_config(profile, **overrides, method=method, **per_method[method])``: one method's settings in a
    side-by-side comparison."""
    return po_config(profile, **{**(overrides or {}), "method": method, **(per_method or {}).get(method, {})})


def compare_methods(lm, classes, sets: dict, methods, profile: str = "embedded", overrides: dict | None = None,
                    per_method: dict | None = None, out_root: str | Path | None = None,
                    progress: bool = True, cache: bool = True) -> MethodRuns:
    """Train every method of ``methods`` on ``sets["train"]`` from ``lm.model`` with ``po_config(profile,
    **overrides, **per_method[m])`` and evaluate on ``sets["test"]`` / ``sets["test_heldout"]``.

    With ``cache`` each method's results, log and training time are stored in the run cache (``clipwb.cache``)
    under the hash of its config, the model's weights and the data; a cached method is not retrained (and so
    writes nothing under ``out_root``)."""
    overrides = overrides or {}
    templates = po_config(profile, **overrides).templates
    keys = _RunKeys(lm, classes, sets)
    runs = MethodRuns(reference=_reference_eval(lm, classes, sets, templates, keys, cache))
    for m in methods:
        cfg = method_config(profile, m, overrides, per_method)

        def run(cfg=cfg, m=m):
            res = train_po(lm.model, lm.tokenizer, classes, sets["train"], cfg,
                           out_dir=Path(out_root) / m if out_root else None, progress=progress, model_name=lm.name)
            out = {"results": {}, "log": res.log, "train_seconds": res.train_seconds}
            # the raw weights too, for the defences that start from a fine-tuned model (PAINT)
            cached_tensors("po-weights-raw", keys.run(cfg), res.model.state_dict, enabled=cache)
            for kind, model in (("raw", res.model), ("avg", res.avg_model)):
                out["results"][kind] = po_eval(model, lm.tokenizer, classes, sets, lm.model, cfg.templates)
            return out

        done = cached_json("po-run", keys.run(cfg), run, enabled=cache)
        runs.results[m] = {kind: {**r, **recovery(r, runs.reference)} for kind, r in done["results"].items()}
        runs.logs[m] = done["log"]
        runs.train_seconds[m] = done["train_seconds"]
    return runs


def sweep(lm, classes, sets: dict, param: str, values, profile: str = "embedded", overrides: dict | None = None,
          weights: str = "avg", progress: bool = True, cache: bool = True) -> list[dict]:
    """One run per value of ``param`` (a POConfig field, e.g. beta or lam) with ``po_config(profile,
    **overrides)``; metrics of the ``weights`` ("avg" or "raw") model; cached as in ``compare_methods``."""
    out = []
    ref = None
    keys = _RunKeys(lm, classes, sets)
    for v in values:
        cfg = po_config(profile, **{**(overrides or {}), param: v})
        if ref is None:
            ref = _reference_eval(lm, classes, sets, cfg.templates, keys, cache)

        def run(cfg=cfg):
            res = train_po(lm.model, lm.tokenizer, classes, sets["train"], cfg, progress=progress, save=False)
            model = res.avg_model if weights == "avg" else res.model
            return {"metrics": po_eval(model, lm.tokenizer, classes, sets, lm.model, cfg.templates),
                    "train_seconds": res.train_seconds}

        done = cached_json(f"po-sweep-{weights}", keys.run(cfg), run, enabled=cache)
        r = done["metrics"]
        out.append({param: v, **r, **recovery(r, ref), "train_seconds": done["train_seconds"]})
    return out
