"""Typographic-attack defences side by side on one pretrained model, one data set and one evaluation (notebook 07).

Every defence is a ``Defence`` (a name, the config that determines its result, and ``fit(ctx)`` on the shared
``DefenceContext`` that returns a ``DefenceFit``: a ``ZeroShotClassifier`` or its metrics, the trainable parameter
count, the seconds and details), registered with ``register_defence``; ``compare_defences`` is a loop over the
registry. Every classifier is scored by ``evaluation.typographic.classifier_eval`` on the held-out sets, against the
pretrained model (recovery, KL drift). Defences that train get the PO profile's budget: the same training pairs,
the same number of epochs and pairs per step (``po_config(profile)``). Strengths that a defence leaves open (PAINT's
alpha, the steering map's t) are chosen on training images only, by one rule
(``defences.interpolation.select_strength``): the highest typographic top-1 whose clean top-1 stays within
``clean_tolerance`` of the zero-shot model's. Each defence's result is stored in the run cache; the PO rows (one per
registered PO method, ``losses.po.PO_METHODS``) are the PO runs of the ``RunContext``, shared with notebook 02, so
the same settings are not retrained.

To add a defence: subclass ``Defence`` (``name``, ``key(ctx)``, ``fit(ctx)``) and ``register_defence(MyDefence())``.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import profiles
from ..config import with_overrides
from ..defences.heads import greedy_ablation
from ..defences.interpolation import interpolate, select_strength
from ..defences.prefix import PrefixConfig, train_prefix
from ..defences.projection import ProjectionConfig, train_projection
from ..evaluation.classifier import ZeroShotClassifier, model_classifier
from ..evaluation.typographic import classifier_eval, recovery
from ..models.inputs import encode_images
from ..steering.linear import LinearMapConfig, StrengthFamily, steer, train_linear_map
from ..losses.po import po_methods
from ..training.po_trainer import result_key, set_trainable
from .context import RunContext
from .po import best_po_method

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


@dataclass(frozen=True)
class DefenceSetting:
    """The comparison's protocol: the strengths tried (PAINT's alphas between 0 and 1, the steering map's t), how
    many training pairs choose them (``select_n``), the clean-accuracy tolerance of the selection rule, the seed."""
    alphas: tuple = (0.25, 0.5, 0.75)
    ts: tuple = (0.5, 1.0, 1.5, 2.0)
    select_n: int = 1024
    clean_tolerance: float = 0.01
    seed: int = 0


class DefenceContext(RunContext):
    """The ``RunContext`` of a defence comparison plus what every defence reads: the pretrained model's image
    features (memoised), its zero-shot classifier ``base``, the selection subset ``sel`` of training pairs and the
    clean floor of the selection rule, the training budget ``steps`` and the ``setting``."""

    def __init__(self, lm, classes, sets: dict, profile: str = "embedded", overrides: dict | None = None,
                 per_method: dict | None = None, setting: DefenceSetting = DefenceSetting(), progress: bool = True,
                 cache: bool = True):
        super().__init__(lm, classes, sets, profile, overrides, per_method, progress=progress, cache=cache)
        self.setting = setting
        self.feats = _Features(lm.model)
        base = model_classifier(lm.model, lm.tokenizer, self.classes, self.templates)
        self.base = ZeroShotClassifier(self.feats, base.text, base.scale)
        self.sel = _selection(sets, setting.select_n, setting.seed)
        self.floor = _train_scores(self.base, self.sel)["clean_top1"] - setting.clean_tolerance
        self.steps = max(1, len(sets["train"]["true"]) // self.base_cfg.batch_size) * self.base_cfg.epochs

    def evaluate(self, clf: ZeroShotClassifier) -> dict:
        """``classifier_eval`` of ``clf`` on the held-out sets, against the zero-shot classifier."""
        return classifier_eval(clf, self.sets, self.base)

    def train_scores(self, clf: ZeroShotClassifier) -> dict:
        """Clean and typographic top-1 on the selection subset of training pairs (what strengths are chosen on)."""
        return _train_scores(clf, self.sel)


@dataclass
class DefenceFit:
    """What ``Defence.fit`` returns: the defended classifier (or its test ``metrics`` where the defence has them
    already), the trainable parameter count, the training seconds, details (chosen strength, heads, config) and
    the rows along an open strength (``curve``, each with the ``train`` scores it was chosen on)."""
    classifier: ZeroShotClassifier | None = None
    metrics: dict | None = None
    trainable: int = 0
    seconds: float = 0.0
    details: dict = field(default_factory=dict)
    curve: list | None = None

    def scored(self, ctx: DefenceContext) -> dict:
        """JSON-able: the test metrics (evaluating the classifier where needed) and the rest."""
        metrics = self.metrics if self.metrics is not None else ctx.evaluate(self.classifier)
        return {"metrics": metrics, "trainable": int(self.trainable), "seconds": float(self.seconds),
                "details": self.details, "curve": self.curve}


class Defence:
    """One defence of the comparison. ``name``: its row; ``key(ctx)``: what determines its result beyond the
    context's model, data and templates (the run cache key; ``None``: not cached here, as the PO rows, which the
    context caches); ``fit(ctx)``: train or choose it and return a ``DefenceFit``."""
    name: str = ""

    def key(self, ctx: DefenceContext):
        return None

    def fit(self, ctx: DefenceContext) -> DefenceFit:
        raise NotImplementedError


_REGISTRY: dict[str, Defence] = {}


def register_defence(defence: Defence) -> Defence:
    """Add ``defence`` to the comparison (after the built-in rows); a name already taken is refused."""
    if not defence.name or defence.name in defences():
        raise ValueError(f"a defence needs a new name, got {defence.name!r}; taken: {list(defences())}")
    _REGISTRY[defence.name] = defence
    return defence


def unregister_defence(name: str) -> None:
    _REGISTRY.pop(name, None)


def defences() -> dict[str, Defence]:
    """Every defence in table order: zero-shot, one row per registered PO method (``losses.po.po_methods()``),
    then the registered defences."""
    return {"zero_shot": ZeroShot(), **{m: PORun(m) for m in po_methods()}, **_REGISTRY}


def defence_names() -> tuple[str, ...]:
    return tuple(defences())


def compare_defences(lm, classes, sets: dict, profile: str = "embedded", overrides: dict | None = None,
                     per_method: dict | None = None, alphas=(0.25, 0.5, 0.75), ts=(0.5, 1.0, 1.5, 2.0),
                     select_n: int = 1024, clean_tolerance: float = 0.01, seed: int = 0, only=None,
                     progress: bool = True, cache: bool = True) -> DefenceRuns:
    """Run every registered defence (or those named in ``only``) from ``lm`` on ``sets`` (``train`` pairs,
    held-out ``test``, ``test_heldout``, ``test_note``) and evaluate them alike; see the module docstring."""
    registry = defences()
    only = list(registry) if only is None else list(only)
    unknown = [d for d in only if d not in registry]
    if unknown:
        raise ValueError(f"unknown defences {unknown}; choose from {list(registry)}")
    setting = DefenceSetting(tuple(alphas), tuple(ts), select_n, clean_tolerance, seed)
    ctx = DefenceContext(lm, classes, sets, profile, overrides, per_method, setting, progress, cache)
    out = DefenceRuns()
    for name in (n for n in registry if n in only):
        d = registry[name]
        key = d.key(ctx)
        res = d.fit(ctx).scored(ctx) if key is None else ctx.cached(f"defence-{name}", key,
                                                                    lambda d=d: d.fit(ctx).scored(ctx))
        out.results[name] = {**res["metrics"], **recovery(res["metrics"], ctx.reference),
                             "trainable_params": res["trainable"], "train_seconds": res["seconds"]}
        if res["details"]:
            out.details[name] = res["details"]
        if res["curve"]:
            out.curves[name] = [_curve_row(r, ctx.reference) for r in res["curve"]]
    return out


def _curve_row(r: dict, reference: dict) -> dict:
    """A strength's test metrics with recovery, and the training-image scores it was chosen on (``select_*``)."""
    return {**{k: v for k, v in r.items() if k != "train"}, **recovery(r, reference),
            **{f"select_{k}": v for k, v in r["train"].items()}}


def _chosen(rows: list[dict], key: str, ctx: DefenceContext) -> dict:
    """The row of ``select_strength`` on the training-image scores, its test metrics (without ``key``/``train``)."""
    pick = select_strength([{key: r[key], **r["train"]} for r in rows], ctx.floor, key=key)
    return next(r for r in rows if r[key] == pick[key])


# -- the built-in defences -------------------------------------------------------------------------------------
class ZeroShot(Defence):
    name = "zero_shot"

    def fit(self, ctx):
        return DefenceFit(metrics=ctx.reference)


class PORun(Defence):
    """A registered PO method's run (raw weights), as notebook 02 trains it."""

    def __init__(self, method: str):
        self.name = self.method = method

    def fit(self, ctx):
        run = ctx.po_run(self.method)
        return DefenceFit(metrics=run["results"]["raw"], trainable=_count(ctx.lm.model, ctx.method_config(
            self.method).train), seconds=run["train_seconds"], details={"weights": "raw"})


class Paint(Defence):
    """PAINT / WiSE-FT: interpolate the pretrained weights toward a PO run's raw weights; alpha chosen on training
    images among 0, ``setting.alphas``, 1."""

    def __init__(self, method: str):
        self.method, self.name = method, f"paint_{method}"

    def key(self, ctx):
        s = ctx.setting
        return [result_key(ctx.method_config(self.method)), list(s.alphas), s.select_n, s.seed, s.clean_tolerance]

    def fit(self, ctx):
        run, ft = ctx.po_run(self.method), ctx.po_weights(self.method)
        lm, t0, rows = ctx.lm, time.time(), []
        for a in (0.0, *ctx.setting.alphas, 1.0):
            model = lm.model if a == 0.0 else ft if a == 1.0 else interpolate(lm.model, ft, a)
            clf = model_classifier(model, lm.tokenizer, ctx.classes, ctx.templates) if a else ctx.base
            rows.append({"alpha": a, "train": ctx.train_scores(clf), **(ctx.reference if a == 0.0 else
                                                                         ctx.evaluate(clf))})
        row = _chosen(rows, "alpha", ctx)
        return DefenceFit(metrics={k: v for k, v in row.items() if k not in ("alpha", "train")},
                          trainable=_count(lm.model, ctx.method_config(self.method).train),
                          seconds=run["train_seconds"] + time.time() - t0, details={"alpha": row["alpha"]},
                          curve=rows)


class DefensePrefix(Defence):
    """Defense-Prefix (Azuma & Matsui): one learned token before the class name, with the PO budget."""
    name = "defense_prefix"

    def config(self, ctx) -> PrefixConfig:
        b = ctx.base_cfg
        return prefix_config(ctx.profile, batch_size=b.batch_size, epochs=b.epochs, seed=b.seed)

    def key(self, ctx):
        return dataclasses.asdict(self.config(ctx))

    def fit(self, ctx):
        from ..defences.prefix import prefix_text_features

        pcfg, tr, lm = self.config(ctx), ctx.sets["train"], ctx.lm
        res = train_prefix(lm.model, lm.tokenizer, ctx.classes, ctx.feats(tr["clean"]), ctx.feats(tr["typo"]),
                           tr["true"], pcfg, ctx.templates, ctx.progress)
        with torch.no_grad():
            text = prefix_text_features(lm.model, lm.tokenizer, ctx.classes, torch.as_tensor(res.vector),
                                        ctx.templates)
        return DefenceFit(ZeroShotClassifier(ctx.feats, text, ctx.base.scale), trainable=len(res.vector),
                          seconds=res.train_seconds,
                          details={"config": dataclasses.asdict(pcfg), "final_step": res.log[-1]})


class Projection(Defence):
    """Materzynska et al.'s forget-to-spell projection of image and text embeddings, with the PO budget."""
    name = "projection"

    def config(self, ctx) -> ProjectionConfig:
        b = ctx.base_cfg
        return ProjectionConfig(batch_size=b.batch_size, epochs=b.epochs, seed=b.seed)

    def key(self, ctx):
        return dataclasses.asdict(self.config(ctx))

    def fit(self, ctx):
        jcfg, tr = self.config(ctx), ctx.sets["train"]
        res = train_projection(ctx.feats(tr["clean"]), ctx.feats(tr["typo"]), tr["true"], ctx.base.text,
                               float(ctx.base.scale), jcfg, ctx.progress)
        return DefenceFit(res.classifier(ctx.base), trainable=int(np.prod(list(res.W.shape))),
                          seconds=res.train_seconds,
                          details={"config": dataclasses.asdict(jcfg), "final_step": res.log[-1]})


class HeadAblation(Defence):
    """Training-free attention-head ablation, heads scored on half the selection pairs, checked on the other."""
    name = "head_ablation"

    def key(self, ctx):
        s = ctx.setting
        return [s.select_n, s.seed, s.clean_tolerance]

    def fit(self, ctx):
        from ..defences.heads import ablate

        sel, half, lm = ctx.sel, len(ctx.sel["true"]) // 2, ctx.lm
        res = greedy_ablation(lm.model, ctx.base.text, sel["typo"][:half], sel["true"][:half],
                              sel["written"][:half], sel["clean"][half:], sel["true"][half:],
                              tolerance=ctx.setting.clean_tolerance, progress=ctx.progress)
        clf = model_classifier(ablate(lm.model, res.heads), lm.tokenizer, ctx.classes, ctx.templates)
        return DefenceFit(clf, trainable=0, seconds=res.seconds,
                          details={"heads": [h.name for h in res.heads], "scores": res.scores, "log": res.log})


class Steering(Defence):
    """The typographic steering map W_t of notebook 04 on frozen image features; t chosen on training images."""
    name = "steering"

    def config(self, ctx) -> LinearMapConfig:
        return LinearMapConfig(steps=ctx.steps, batch_size=ctx.base_cfg.batch_size, lr=0.02, lam=5.0, nu=0.1,
                               seed=ctx.base_cfg.seed)

    def key(self, ctx):
        s = ctx.setting
        return [dataclasses.asdict(self.config(ctx)), list(s.ts), s.select_n, s.seed, s.clean_tolerance]

    def fit(self, ctx):
        scfg, tr, feats, base = self.config(ctx), ctx.sets["train"], ctx.feats, ctx.base
        t0 = time.time()
        W, _ = train_linear_map(feats(tr["typo"]), base.text, tr["true"], tr["written"], float(base.scale),
                                keep=[(feats(tr["clean"]), base.text)], cfg=scfg, progress=ctx.progress)
        seconds, fam, rows = time.time() - t0, StrengthFamily(W), []
        for t in (0.0, *ctx.setting.ts):
            W_t = fam.at(float(t))
            clf = ZeroShotClassifier(lambda x, W_t=W_t: steer(feats(x), W_t), base.text, base.scale)
            rows.append({"t": float(t), "train": ctx.train_scores(clf), **ctx.evaluate(clf)})
        row = _chosen(rows, "t", ctx)
        return DefenceFit(metrics={k: v for k, v in row.items() if k not in ("t", "train")},
                          trainable=len(base.text[0]) ** 2, seconds=seconds,
                          details={"t": row["t"], "config": dataclasses.asdict(scfg)}, curve=rows)


for _d in (Paint("ce"), Paint("dpo"), DefensePrefix(), Projection(), HeadAblation(), Steering()):
    register_defence(_d)


def verdict_rows(runs: DefenceRuns, keys=("clean_top1", "typo_top1", "typo_heldout_top1", "typo_note_top1")) -> dict:
    """Notebook 07's closing comparison: the best PO method (``experiments.po.best_po_method`` on test
    typographic top-1) against every other row, differences in points (positive: PO ahead)."""
    po = best_po_method(runs.results)
    rows = {d: {f"{k} (pts)": round(100 * (runs.results[po][k] - r[k]), 1) for k in keys}
            for d, r in runs.results.items() if d != po and d not in po_methods(baseline=False)}
    return {"best_po": po, "rows": rows}


def beats_zero_shot(runs: DefenceRuns) -> list[dict]:
    """Per defence: its typographic top-1 against zero-shot's, whether it beats it, the clean change in points and
    the chosen strength or head count."""
    zs, rows = runs.results["zero_shot"], []
    for d, r in runs.results.items():
        if d == "zero_shot":
            continue
        det = runs.details.get(d, {})
        chosen = (f"alpha={det['alpha']}" if "alpha" in det else f"t={det['t']}" if "t" in det
                  else f"{len(det['heads'])} heads" if "heads" in det else None)
        rows.append({"defence": d, "typo_top1": r["typo_top1"], "zero_shot": zs["typo_top1"],
                     "beats": r["typo_top1"] > zs["typo_top1"],
                     "clean_change_pts": round(100 * (r["clean_top1"] - zs["clean_top1"]), 1),
                     **({"chosen": chosen} if chosen else {})})
    return rows


def flat_metrics(runs: DefenceRuns) -> dict:
    """``<defence>_{typo,clean}_top1`` for every row (notebook 07's flat metric keys)."""
    return {f"{d}_{k}": r[k] for d, r in runs.results.items() for k in ("typo_top1", "clean_top1")}
