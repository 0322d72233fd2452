"""The run context that the PO and defence drivers share: one pretrained model, one data set, one PO profile.

``RunContext`` holds the model, the classes, the sets (``train`` pairs and the held-out ``test``,
``test_heldout``, ``test_note``), the keys that identify their results in the run cache, the pretrained model's
own evaluation (the "before" of every recovery) and the trained PO runs and their raw weights. Every result it
computes is stored in the run cache (``clipwb.cache``) under the hash of the config, the model's weights and the
data, so notebook 02 (PO side by side) and notebook 07 (defences) train each PO method once between them."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from ..cache import cached_json, cached_tensors, fingerprint
from ..evaluation.classifier import memo_classifier
from ..evaluation.stats import pack_correct, unpack_correct
from ..evaluation.typographic import classifier_eval, po_eval
from ..precision import resolve_precision
from ..training.po_trainer import POConfig, po_config, result_key, train_po
from ..training.trainable import uses_fast_tower


class RunKeys:
    """What determines a PO run's results: its config and the precision it resolves to here, the model's weights,
    the classes and every array of the sets (training pairs and held-out sets); the two content hashes are
    computed once."""

    def __init__(self, lm, classes, sets: dict):
        self.model = lm.model
        # the validation split chooses strengths and trains nothing: PO runs do not depend on it
        self.base = [fingerprint(lm.model), list(classes), fingerprint({k: v for k, v in sets.items() if k != "val"})]

    def config(self, cfg: POConfig) -> list:
        """The config part of a run's key: ``result_key(cfg)`` (with ``fast_tower`` where the policy runs
        ``training.fast_tower``'s forward, whose float rounding differs from open_clip's) and the precision the
        trainer resolves it to for this model on this machine (``precision="auto"`` is a per-machine, per-model
        measured choice, and ``CLIPWB_PRECISION`` overrides it: a cache shared between machines, or a changed choice,
        must not hand a run trained in bf16 to one that would train in fp32)."""
        rk = result_key(cfg)
        if uses_fast_tower(cfg, self.model, as_policy=True):  # another float rounding than open_clip's forward
            rk = {**rk, "fast_tower": cfg.fast_tower}
        return [rk, resolve_precision(cfg.precision, cfg.device, model=self.model).cache_key()]

    def run(self, cfg: POConfig) -> list:
        return [*self.config(cfg), *self.base]

    def reference(self, templates) -> list:
        return [list(templates), *self.base]


class RunContext:
    """One pretrained model (``lm``, a ``models.LoadedModel``) on one data set with one PO profile (``profile``,
    ``overrides`` for every method, ``per_method`` overrides); see the module docstring. ``out_root``: where
    freshly trained PO runs write their checkpoints, logs and models (``out_root/<method>``); ``cache=False``
    recomputes everything."""

    def __init__(self, lm, classes, sets: dict, profile: str = "embedded", overrides: dict | None = None,
                 per_method: dict | None = None, out_root: str | Path | None = None, progress: bool = True,
                 cache: bool = True):
        self.lm, self.classes, self.sets = lm, list(classes), sets
        self.profile, self.overrides, self.per_method = profile, dict(overrides or {}), dict(per_method or {})
        self.out_root, self.progress, self.cache = out_root, progress, cache
        self.keys = RunKeys(lm, self.classes, sets)
        self.base_cfg = po_config(profile, **self.overrides)
        self.templates = self.base_cfg.templates
        # the pretrained model's zero-shot classifier, its image features computed once per array: the reference
        # side of every evaluation (KL drift) and the features of defences that keep its image tower
        self.base = memo_classifier(lm.model, lm.tokenizer, self.classes, self.templates)
        self.feats = self.base.encode
        self._reference: dict | None = None
        self._runs: dict[tuple[str, int], dict] = {}

    def method_config(self, method: str, seed: int | None = None) -> POConfig:
        """``po_config(profile, **overrides, method=method, **per_method[method])``, with the training ``seed``
        where given (the data stay the same)."""
        cfg = method_config(self.profile, method, self.overrides, self.per_method)
        return cfg if seed is None else dataclasses.replace(cfg, seed=seed)

    def training_seed(self, seed: int | None) -> int:
        """A training seed as given, or the profile's where None."""
        return self.base_cfg.seed if seed is None else seed

    def _reference_entry(self) -> dict:
        if self._reference is None:
            lm = self.lm

            def run():
                m, c = classifier_eval(self.base, self.sets, self.base, return_correct=True)
                return {"metrics": m, "correct": pack_correct(c)}

            self._reference = cached_json("po-reference", self.keys.reference(self.templates), run,
                                          enabled=self.cache)
        return self._reference

    @property
    def reference(self) -> dict:
        """``po_eval`` of the pretrained model itself (the "before" of every damage; its kl_drift is 0), cached."""
        return self._reference_entry()["metrics"]

    @property
    def reference_correct(self) -> dict:
        """The pretrained model's per-image correctness ({"clean", "typo", ...: bool array}) on the held-out sets."""
        return unpack_correct(self._reference_entry()["correct"])

    def reference_for(self, cfg: POConfig):
        """What a PO run of ``cfg`` is evaluated against: the memoised pretrained classifier ``base`` where the run
        uses this context's prompt templates, else the pretrained model itself (its classifier is built anew)."""
        return self.base if list(cfg.templates) == list(self.templates) else self.lm.model

    def cached(self, kind: str, key, compute) -> dict:
        """``cache.cached_json`` under ``kind`` and ``key`` plus this context's model, data and templates."""
        return cached_json(kind, [key, self.keys.base, list(self.templates)], compute, enabled=self.cache)

    def po_run(self, method: str, seed: int | None = None) -> dict:
        """The PO run of ``method`` (training seed ``seed``, default the profile's): {"results": {"raw": metrics,
        "avg": metrics}, "correct": {"raw"/"avg": packed per-image correctness}, "log": per-step rows,
        "train_seconds"}; trained once (its raw weights stored for ``po_weights``), then read from the cache."""
        cfg = self.method_config(method, seed)
        if (method, cfg.seed) not in self._runs:
            lm = self.lm

            def run():
                sub = method if seed is None else f"{method}-seed{cfg.seed}"
                res = train_po(lm.model, lm.tokenizer, self.classes, self.sets["train"], cfg,
                               out_dir=Path(self.out_root) / sub if self.out_root else None,
                               progress=self.progress, model_name=lm.name)
                cached_tensors("po-weights-raw", self.keys.run(cfg), res.model.state_dict, enabled=self.cache)
                out = {"results": {}, "correct": {}, "log": res.log, "train_seconds": res.train_seconds}
                for kind, model in (("raw", res.model), ("avg", res.avg_model)):
                    m, c = po_eval(model, lm.tokenizer, self.classes, self.sets, self.reference_for(cfg),
                                   cfg.templates, return_correct=True)
                    out["results"][kind], out["correct"][kind] = m, pack_correct(c)
                return out

            self._runs[(method, cfg.seed)] = cached_json("po-run", self.keys.run(cfg), run, enabled=self.cache)
        return self._runs[(method, cfg.seed)]

    def po_weights(self, method: str, seed: int | None = None):
        """The raw fine-tuned model of ``method``'s PO run (for the defences that start from it, as PAINT),
        read from the run cache, or trained again where the weights are not there."""
        cfg = self.method_config(method, seed)
        lm = self.lm

        def run():
            res = train_po(lm.model, lm.tokenizer, self.classes, self.sets["train"], cfg, progress=self.progress,
                           save=False, model_name=lm.name)
            return res.model.state_dict()

        sd = cached_tensors("po-weights-raw", self.keys.run(cfg), run, enabled=self.cache)
        model = copy.deepcopy(lm.model)
        model.load_state_dict(sd)
        return model.eval()


def method_config(profile: str, method: str, overrides: dict | None = None, per_method: dict | None = None):
    """``po_config(profile, **overrides, method=method, **per_method[method])``: one method's settings in a
    side-by-side comparison."""
    return po_config(profile, **{**(overrides or {}), "method": method, **(per_method or {}).get(method, {})})
