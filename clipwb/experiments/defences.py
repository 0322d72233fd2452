"""Typographic-attack defences side by side on one pretrained model, one data set and one evaluation (notebook 07).

Every defence is a ``Defence`` (a name, the config that determines its result, and ``fit(ctx)`` on the shared
``DefenceContext`` that returns a ``DefenceFit``: a ``ZeroShotClassifier`` or its metrics, the trainable parameter
count, the seconds and details), registered with ``register_defence``; ``compare_defences`` is a loop over the
registry. Every classifier is scored by ``evaluation.typographic.classifier_eval`` on the held-out sets, against the
pretrained model (presence and reading damage and their recoveries, KL drift). Defences that train get the PO
profile's budget: the same training pairs, the same number of epochs and pairs per step (``po_config(profile)``). Strengths that a defence leaves open (PAINT's
alpha, the steering map's t) are chosen on the validation split (``sets["val"]``: images in neither the training
nor the test sets, attacked the same way; the training pairs where the sets have no ``val``), by one rule
(``defences.interpolation.select_strength``): the highest typographic top-1 whose clean top-1 stays within
``clean_tolerance`` of the zero-shot model's. Each defence's result is stored in the run cache; the PO rows (one per
registered PO method, ``losses.po.PO_METHODS``) are the PO runs of the ``RunContext``, shared with notebook 02, so
the same settings are not retrained.

To add a defence: subclass ``Defence`` (``name``, ``trains``, ``key(ctx)``, ``fit(ctx, seed)``) and
``register_defence(MyDefence())``.
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
from ..defences.heads import ablate, greedy_ablation, head_effects
from ..defences.interpolation import interpolate, select_strength
from ..defences.prefix import PrefixConfig, train_prefix
from ..defences.projection import ProjectionConfig, train_projection
from ..cache import fingerprint
from ..evaluation.classifier import ZeroShotClassifier, model_classifier
from ..evaluation.stats import aggregate_seeds, pack_correct, unpack_correct
from ..evaluation.typographic import against, classifier_eval
from ..steering.linear import LinearMapConfig, StrengthFamily, steer, train_linear_map
from ..losses.po import po_methods
from ..training.po_trainer import set_trainable
from .context import RunContext
from .po import best_po_method, paired_verdicts

KEYS = ("clean_top1", "typo_top1", "typo_heldout_top1", "typo_note_top1", "attack_success", "presence_damage",
        "reading_damage", "presence_recovery", "reading_recovery", "kl_drift", "trainable_params", "train_seconds")


def prefix_config(profile: str = "reference", **overrides) -> PrefixConfig:
    """Defense-Prefix settings of a PO profile (``profiles.PROFILES["defense_prefix"]``) with overrides."""
    return with_overrides(PrefixConfig(), {**profiles.profile("defense_prefix", profile), **overrides})


@dataclass
class DefenceRuns:
    # defence -> KEYS (+ the full classifier_eval metrics); a defence that trains, over several seeds: the seeds'
    # means with <key>_std, <key>_seeds, <key>_seed_ci and, for a top-1, <key>_ci over images
    results: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)  # paint_ce / paint_dpo / steering -> rows along the strength
    details: dict = field(default_factory=dict)  # chosen strengths, ablated heads, configs (per seed: "per_seed")
    scores: dict = field(default_factory=dict)  # defence -> {key: per-image correctness (mean over seeds)}
    seeds: tuple = ()
    selection: dict = field(default_factory=dict)  # the selection rule's split, its size n and its clean floor

    def table(self) -> dict:
        return {d: {k: r.get(k) for k in KEYS} for d, r in self.results.items()}


def _selection(sets: dict, n: int, seed: int) -> tuple[dict, str]:
    """A seeded subset of ``n`` pairs on which strengths are chosen and heads are scored, and its split: the
    validation split where the sets have one (images disjoint from training and test), else the training pairs
    (which the fine-tuned models have seen: the older, optimistic protocol)."""
    split = "val" if "val" in sets else "train"
    tr = sets[split]
    idx = np.sort(np.random.default_rng([seed, 7]).permutation(len(tr["true"]))[:n])
    return {k: np.asarray(tr[k])[idx] for k in ("clean", "typo", "true", "written")}, split


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
    many pairs choose them (``select_n``), the clean-accuracy tolerance of the selection rule, the selection seed,
    and the training seeds of every defence that trains (``None``: the PO profile's seed)."""
    alphas: tuple = (0.25, 0.5, 0.75)
    ts: tuple = (0.5, 1.0, 1.5, 2.0)
    select_n: int = 1024
    clean_tolerance: float = 0.01
    seed: int = 0
    seeds: tuple = (None,)
    # head ablation's ranking of the heads, (name, score) pairs, highest first tried: e.g. the typographic attention
    # score on box-annotated validation images (``experiments.reading.head_ranking``), as Dyslexify ranks them; empty:
    # each head's ablation effect on the written-word margin (``defences.heads.score_heads``: any data, any tower)
    head_scores: tuple = ()


class DefenceContext(RunContext):
    """The ``RunContext`` of a defence comparison plus what every defence reads: the pretrained model's image
    features (memoised), its zero-shot classifier ``base``, the selection subset ``sel`` (of the validation split
    where the sets have one) and the clean floor of the selection rule, the training budget ``steps`` and the
    ``setting``."""

    def __init__(self, lm, classes, sets: dict, profile: str = "embedded", overrides: dict | None = None,
                 per_method: dict | None = None, setting: DefenceSetting = DefenceSetting(), progress: bool = True,
                 cache: bool = True):
        super().__init__(lm, classes, sets, profile, overrides, per_method, progress=progress, cache=cache)
        self.setting = setting
        self.sel, self.selection_split = _selection(sets, setting.select_n, setting.seed)
        self.selection_key = [self.selection_split, fingerprint(self.sel)]
        self.floor = _train_scores(self.base, self.sel)["clean_top1"] - setting.clean_tolerance
        self.steps = max(1, len(sets["train"]["true"]) // self.base_cfg.batch_size) * self.base_cfg.epochs

    def evaluate(self, clf: ZeroShotClassifier, return_correct: bool = False):
        """``classifier_eval`` of ``clf`` on the held-out sets, against the zero-shot classifier."""
        return classifier_eval(clf, self.sets, self.base, return_correct)

    def train_scores(self, clf: ZeroShotClassifier) -> dict:
        """Clean and typographic top-1 on the selection subset (of the validation split where there is one): what
        strengths are chosen on."""
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
    correct: dict | None = None  # per-image correctness that goes with ``metrics`` ({"clean", "typo", ...})

    def scored(self, ctx: DefenceContext) -> dict:
        """JSON-able: the test metrics and per-image correctness (evaluating the classifier where needed), the
        rest as given."""
        metrics, correct = self.metrics, self.correct
        if metrics is None:
            metrics, correct = ctx.evaluate(self.classifier, return_correct=True)
        return {"metrics": metrics, "correct": pack_correct(correct) if correct is not None else None,
                "trainable": int(self.trainable), "seconds": float(self.seconds), "details": self.details,
                "curve": self.curve}


class Defence:
    """One defence of the comparison. ``name``: its row; ``trains``: whether it is fitted once per training seed;
    ``key(ctx)``: what determines its result beyond the context's model, data, templates, selection split and
    seed (the run cache key; ``None``: not cached here, as the PO rows, which the context caches);
    ``fit(ctx, seed)``: train (with training seed ``seed``; ``ctx.training_seed(seed)`` resolves None) or choose it
    and return a ``DefenceFit``."""
    name: str = ""
    trains: bool = False

    def key(self, ctx: DefenceContext):
        return None

    def fit(self, ctx: DefenceContext, seed: int | None = None) -> DefenceFit:
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
                     progress: bool = True, cache: bool = True, seeds=None,
                     head_scores: dict | None = None) -> DefenceRuns:
    """Run every registered defence (or those named in ``only``) from ``lm`` on ``sets`` (``train`` pairs, ``val``
    for the selection, held-out ``test``, ``test_heldout``, ``test_note``) and evaluate them alike; those that
    train once per training seed of ``seeds`` (None: the PO profile's seed). ``head_scores``: head ablation's
    ranking (head name -> score; None: the heads' effect on the written-word margin, ``DefenceSetting``). See the
    module docstring."""
    registry = defences()
    only = list(registry) if only is None else list(only)
    unknown = [d for d in only if d not in registry]
    if unknown:
        raise ValueError(f"unknown defences {unknown}; choose from {list(registry)}")
    setting = DefenceSetting(tuple(alphas), tuple(ts), select_n, clean_tolerance, seed, tuple(seeds or (None,)),
                             _ranking(head_scores))
    ctx = DefenceContext(lm, classes, sets, profile, overrides, per_method, setting, progress, cache)
    out = DefenceRuns(seeds=tuple(ctx.training_seed(s) for s in setting.seeds),
                      selection={"split": ctx.selection_split, "n": len(ctx.sel["true"]), "floor": ctx.floor})
    for name in (n for n in registry if n in only):
        d = registry[name]
        fits = [_fit(ctx, d, s) for s in (setting.seeds if d.trains else (None,))]
        per_seed = [{**f["metrics"], **against(f["metrics"], ctx.reference)} for f in fits]
        correct = [unpack_correct(f["correct"]) for f in fits] if all(f["correct"] for f in fits) else None
        agg, out.scores[name] = aggregate_seeds(per_seed, correct, out.seeds if len(fits) > 1 else None)
        out.results[name] = {**agg, "trainable_params": fits[0]["trainable"],
                             "train_seconds": float(np.mean([f["seconds"] for f in fits]))}
        details = fits[0]["details"] if len(fits) == 1 else {"per_seed": [f["details"] for f in fits],
                                                              **_chosen_per_seed(fits)}
        if details:
            out.details[name] = details
        if fits[0]["curve"]:
            out.curves[name] = _mean_curve([[_curve_row(r, ctx.reference) for r in f["curve"]] for f in fits])
    return out


def _fit(ctx: DefenceContext, d: Defence, seed: int | None) -> dict:
    """One fit of ``d`` scored, through the run cache where the defence has a key."""
    key = d.key(ctx)
    if key is None:
        return d.fit(ctx, seed).scored(ctx)
    parts = [key, ctx.selection_key] + ([ctx.training_seed(seed)] if d.trains else [])
    return ctx.cached(f"defence-{d.name}", parts, lambda: d.fit(ctx, seed).scored(ctx))


def _chosen_per_seed(fits: list[dict]) -> dict:
    """The strengths chosen for each seed (``alpha`` / ``t``), as lists beside ``per_seed``."""
    return {k: [f["details"][k] for f in fits] for k in ("alpha", "t") if k in fits[0]["details"]}


def _mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Rows along a strength averaged over seeds (numbers only; every seed tries the same strengths). A test
    metric that not every seed measured at a strength (only the chosen strength is evaluated there) is left out of
    that row rather than averaged over the seeds that chose it."""
    if len(curves) == 1:
        return curves[0]
    out = []
    for i, row in enumerate(curves[0]):
        keys = [k for k in row if all(k in c[i] for c in curves)]
        out.append({k: (float(np.mean([c[i][k] for c in curves])) if isinstance(row[k], (int, float))
                        and not isinstance(row[k], bool) else row[k]) for k in keys})
        # the selection scores' spread over seeds: how far training noise moves a strength against the floor
        out[-1].update({f"{k}_std": float(np.std([c[i][k] for c in curves], ddof=1)) for k in keys
                        if k.startswith("select_") and isinstance(row[k], (int, float))})
    return out


def _curve_row(r: dict, reference: dict) -> dict:
    """A strength's test metrics with its damages (where it was evaluated on the test sets), and the
    selection-split scores it was chosen on (``select_*``)."""
    tested = "clean_top1" in r
    return {**{k: v for k, v in r.items() if k != "train"}, **(against(r, reference) if tested else {}),
            **{f"select_{k}": v for k, v in r["train"].items()}}


def _chosen(rows: list[dict], key: str, ctx: DefenceContext) -> dict:
    """The row ``select_strength`` picks on the selection-split scores (``row["train"]``, the validation split where
    there is one)."""
    pick = select_strength([{key: r[key], **r["train"]} for r in rows], ctx.floor, key=key)
    return next(r for r in rows if r[key] == pick[key])


# -- the built-in defences -------------------------------------------------------------------------------------
class ZeroShot(Defence):
    name = "zero_shot"

    def fit(self, ctx, seed=None):
        return DefenceFit(metrics=ctx.reference, correct=ctx.reference_correct)


class PORun(Defence):
    """A registered PO method's run (raw weights), as notebook 02 trains it."""
    trains = True

    def __init__(self, method: str):
        self.name = self.method = method

    def fit(self, ctx, seed=None):
        run = ctx.po_run(self.method, seed)
        return DefenceFit(metrics=run["results"]["raw"], correct=unpack_correct(run["correct"]["raw"]),
                          trainable=_count(ctx.lm.model, ctx.method_config(self.method).train),
                          seconds=run["train_seconds"], details={"weights": "raw"})


def _strength_rows(ctx, key: str, strengths, classifier_at, known: dict | None = None, test_all: bool = True):
    """Every strength's selection-split scores and test metrics; returns (rows, the chosen row's index, its
    per-image correctness). ``classifier_at(value)`` gives the classifier, or None for the zero-shot model;
    ``known``: strength -> (test metrics, per-image correctness) already measured (not evaluated again).
    ``test_all=False``: only the chosen strength is evaluated on the test sets (the choice reads the selection
    scores alone); the other rows carry their selection scores and, where known (the zero-shot model, ``known``),
    their test metrics."""
    rows, correct, known, later = [], [], known or {}, {}
    for v in strengths:
        clf = classifier_at(v)
        if clf is not None and v not in known and not test_all:
            m, c = {}, None
            later[v] = clf  # kept: the chosen one is evaluated below without being built again
        else:
            m, c = ((ctx.reference, ctx.reference_correct) if clf is None else known[v] if v in known
                    else ctx.evaluate(clf, return_correct=True))
        rows.append({key: v, "train": ctx.train_scores(clf or ctx.base), **m})
        correct.append(c)
    row = _chosen(rows, key, ctx)
    i = rows.index(row)
    if row[key] in later:  # test_all=False: the chosen strength is evaluated now
        m, correct[i] = ctx.evaluate(later[row[key]], return_correct=True)
        row.update(m)
    return rows, i, correct[i]


class Paint(Defence):
    """PAINT / WiSE-FT: interpolate the pretrained weights toward a PO run's raw weights; alpha chosen on the
    selection split among 0, ``setting.alphas``, 1."""
    trains = True  # its fine-tune does

    def __init__(self, method: str):
        self.method, self.name = method, f"paint_{method}"

    def key(self, ctx):
        s = ctx.setting
        return [*ctx.keys.config(ctx.method_config(self.method)), list(s.alphas), s.select_n, s.seed, s.clean_tolerance,
                "test: chosen alpha"]

    def fit(self, ctx, seed=None):
        run, ft = ctx.po_run(self.method, seed), ctx.po_weights(self.method, seed)
        lm, t0 = ctx.lm, time.time()

        def at(a):
            if a == 0.0:
                return None
            model = ft if a == 1.0 else interpolate(lm.model, ft, a)
            return model_classifier(model, lm.tokenizer, ctx.classes, ctx.templates)

        # alpha 1 is the PO run's raw model, whose test metrics the run already holds (same sets, evaluation and
        # reference): not evaluated again; of the alphas in between only the chosen one is evaluated on the test
        # sets (the others' test metrics would be shown, never used: issue 28's cut, ~20 s a fit here)
        known = ({1.0: (run["results"]["raw"], unpack_correct(run["correct"]["raw"]))}
                 if list(ctx.method_config(self.method, seed).templates) == list(ctx.templates) else {})
        rows, i, correct = _strength_rows(ctx, "alpha", (0.0, *ctx.setting.alphas, 1.0), at, known, test_all=False)
        return DefenceFit(metrics={k: v for k, v in rows[i].items() if k not in ("alpha", "train")}, correct=correct,
                          trainable=_count(lm.model, ctx.method_config(self.method).train),
                          seconds=run["train_seconds"] + time.time() - t0,
                          details={"alpha": rows[i]["alpha"], "selected_on": ctx.selection_split}, curve=rows)


class DefensePrefix(Defence):
    """Defense-Prefix (Azuma & Matsui): one learned token before the class name, with the PO budget."""
    name = "defense_prefix"
    trains = True

    def config(self, ctx, seed=None) -> PrefixConfig:
        b = ctx.base_cfg
        return prefix_config(ctx.profile, batch_size=b.batch_size, epochs=b.epochs, seed=ctx.training_seed(seed))

    def key(self, ctx):
        return dataclasses.asdict(self.config(ctx))

    def fit(self, ctx, seed=None):
        from ..defences.prefix import prefix_text_features

        pcfg, tr, lm = self.config(ctx, seed), ctx.sets["train"], ctx.lm
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
    trains = True

    def config(self, ctx, seed=None) -> ProjectionConfig:
        b = ctx.base_cfg
        return ProjectionConfig(batch_size=b.batch_size, epochs=b.epochs, seed=ctx.training_seed(seed))

    def key(self, ctx):
        return dataclasses.asdict(self.config(ctx))

    def fit(self, ctx, seed=None):
        jcfg, tr = self.config(ctx, seed), ctx.sets["train"]
        res = train_projection(ctx.feats(tr["clean"]), ctx.feats(tr["typo"]), tr["true"], ctx.base.text,
                               float(ctx.base.scale), jcfg, ctx.progress)
        return DefenceFit(res.classifier(ctx.base), trainable=int(np.prod(list(res.W.shape))),
                          seconds=res.train_seconds,
                          details={"config": dataclasses.asdict(jcfg), "final_step": res.log[-1]})


# Dyslexify's keep rule (their greedy_selection.py): a head is kept only if it raises typographic top-1 by at least
# this much over the heads kept so far; the search ends after more than HEAD_PATIENCE heads in a row that do not
HEAD_MIN_GAIN, HEAD_PATIENCE = 0.001, 10


def _ranking(head_scores: dict | None) -> tuple:
    """A head ranking as ``DefenceSetting.head_scores``: (name, score) pairs, highest first (ties by name)."""
    return tuple(sorted(((str(k), float(v)) for k, v in (head_scores or {}).items()), key=lambda kv: (-kv[1], kv[0])))


def _greedy_on_selection(ctx, **kw):
    """``greedy_ablation`` on the comparison's protocol: heads ranked by ``ctx.setting.head_scores`` (or scored on
    the first half of the selection pairs' attacked images by their effect on the written-word margin), the clean
    tolerance checked on the other half's clean images and Dyslexify's keep rule on that half's attacked images
    (``HEAD_MIN_GAIN``, ``HEAD_PATIENCE``)."""
    sel, half = ctx.sel, len(ctx.sel["true"]) // 2
    if ctx.setting.head_scores and "scores" not in kw:
        kw["scores"] = dict(ctx.setting.head_scores)
    kw.update(typo_val=sel["typo"][half:], min_gain=HEAD_MIN_GAIN, patience=HEAD_PATIENCE)
    return greedy_ablation(ctx.lm.model, ctx.base.text, sel["typo"][:half], sel["true"][:half], sel["written"][:half],
                           sel["clean"][half:], sel["true"][half:], tolerance=ctx.setting.clean_tolerance, **kw)


class HeadAblation(Defence):
    """Training-free attention-head ablation by Dyslexify's greedy selection: heads tried in the order of the
    setting's ranking (or of their effect on the written-word margin on half the selection pairs), each kept if it
    raises typographic top-1 on the other half and clean top-1 there stays within the tolerance; the search stops at
    the first head that would break the tolerance."""
    name = "head_ablation"

    def key(self, ctx):
        s = ctx.setting
        return [s.select_n, s.seed, s.clean_tolerance, "dyslexify keep rule", HEAD_MIN_GAIN, HEAD_PATIENCE,
                [list(kv) for kv in s.head_scores]]

    def fit(self, ctx, seed=None):
        lm = ctx.lm
        res = _greedy_on_selection(ctx, progress=ctx.progress)
        clf = model_classifier(ablate(lm.model, res.heads), lm.tokenizer, ctx.classes, ctx.templates)
        return DefenceFit(clf, trainable=0, seconds=res.seconds,
                          details={"heads": [h.name for h in res.heads], "scores": res.scores, "log": res.log,
                                   "selected_on": ctx.selection_split,
                                   "ranking": "given" if ctx.setting.head_scores else "margin effect"})


class Steering(Defence):
    """The typographic steering map W_t of notebook 04 on frozen image features; t chosen on the selection split."""
    name = "steering"
    trains = True

    def config(self, ctx, seed=None) -> LinearMapConfig:
        return LinearMapConfig(steps=ctx.steps, batch_size=ctx.base_cfg.batch_size, lr=0.02, lam=5.0, nu=0.1,
                               seed=ctx.training_seed(seed))

    def key(self, ctx):
        s = ctx.setting
        return [dataclasses.asdict(self.config(ctx)), list(s.ts), s.select_n, s.seed, s.clean_tolerance]

    def fit(self, ctx, seed=None):
        scfg, tr, feats, base = self.config(ctx, seed), ctx.sets["train"], ctx.feats, ctx.base
        t0 = time.time()
        W, _ = train_linear_map(feats(tr["typo"]), base.text, tr["true"], tr["written"], float(base.scale),
                                keep=[(feats(tr["clean"]), base.text)], cfg=scfg, progress=ctx.progress)
        seconds, fam = time.time() - t0, StrengthFamily(W)

        def at(t):
            W_t = fam.at(float(t))
            return ZeroShotClassifier(lambda x: steer(feats(x), W_t), base.text, base.scale)

        rows, i, correct = _strength_rows(ctx, "t", [0.0, *map(float, ctx.setting.ts)], at)
        return DefenceFit(metrics={k: v for k, v in rows[i].items() if k not in ("t", "train")}, correct=correct,
                          trainable=len(base.text[0]) ** 2, seconds=seconds,
                          details={"t": rows[i]["t"], "selected_on": ctx.selection_split,
                                   "config": dataclasses.asdict(scfg)}, curve=rows)


for _d in (Paint("ce"), Paint("dpo"), DefensePrefix(), Projection(), HeadAblation(), Steering()):
    register_defence(_d)


def selection_edges(runs: DefenceRuns, z: float = 2.0) -> dict:
    """Per defence whose strength the selection rule chose (a curve: PAINT's alpha, the map's t) over several
    training seeds, whether that choice sits at the edge of the clean tolerance: a strength whose clean top-1 on the
    selection split is within ``z`` standard deviations over the seeds (``select_clean_top1_std``: training noise;
    the selection images are fixed) of the floor, and that is the chosen one or would have won had it kept the
    floor (a higher selection typographic top-1). Such a choice can flip with the training noise that the test-image
    interval of a verdict does not carry: measured, PAINT-CE's alpha on the conv tower was 0.75 for all three seeds
    in bf16 (Zen 4, selection clean 0.896 against a floor of 0.891) and 0.5 in fp32 (AVX2 EPYC, 0.888 at 0.75), and
    KTO against it on typographic top-1 went from -2.9 [-4.4, -1.5] to +2.8 [1.1, 4.6] points. Returns {defence:
    {"strength", "chosen", "near_edge" (None: one seed, no spread to judge by), "rows": [{strength, "margin_pts"
    (clean minus floor), "std_pts"}]}}; empty where ``runs`` carries no selection floor."""
    sel = runs.selection
    if not sel or "floor" not in sel:
        return {}
    floor, out = sel["floor"], {}
    for name, curve in runs.curves.items():
        key = "alpha" if "alpha" in curve[0] else "t"
        chosen = runs.details.get(name, {}).get(key)
        chosen = sorted(set(chosen)) if isinstance(chosen, list) else [chosen]  # per seed, or the one choice
        best_typo = max((r["select_typo_top1"] for r in curve if r[key] in chosen), default=-1.0)
        spread = "select_clean_top1_std" in curve[0]  # _mean_curve adds it to every row over two or more seeds
        rows, near = [], False
        for r in curve:
            margin, std = r["select_clean_top1"] - floor, r.get("select_clean_top1_std")
            rows.append({key: r[key], "margin_pts": round(100 * margin, 2),
                         "std_pts": None if std is None else round(100 * std, 2)})
            matters = r[key] in chosen or r["select_typo_top1"] > best_typo
            near |= bool(spread and matters and abs(margin) < z * std)
        out[name] = {"strength": key, "chosen": chosen if len(chosen) > 1 else chosen[0],
                     "near_edge": near if spread else None, "rows": rows}
    return out


def verdict_rows(runs: DefenceRuns, keys=("clean", "typo")) -> dict:
    """Notebook 07's verdicts: the best PO method (``experiments.po.best_po_method`` on test typographic top-1)
    against every row that is not a preference method, on clean and typographic top-1: the difference in points
    (positive: PO ahead), its paired interval over the test images and whether it is significant at 5 %
    (``experiments.po.paired_verdicts``). A row against a defence whose chosen strength sits at the edge of the clean
    tolerance (``selection_edges``) carries ``selection_near_edge``: its verdict holds for that choice, which
    another seed or precision can flip, and is no finding; "selection_edges" gives the margins."""
    po = best_po_method(runs.results)
    others = [d for d in runs.results if d not in po_methods(baseline=False)]
    edges = selection_edges(runs)
    rows = paired_verdicts(runs.scores, [(po, d) for d in others], keys)
    for row in rows:
        if row["b"] in edges:
            row["selection_near_edge"] = edges[row["b"]]["near_edge"]
    return {"best_po": po, "rows": rows, "selection_edges": edges}


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


def ablation_diagnosis(lm, classes, sets: dict, scores: dict, select_n: int = 1024, clean_tolerance: float = 0.01,
                       seed: int = 0, n_heads: int = 12, progress: bool = False, cache: bool = True) -> dict:
    """Why head ablation chose what it chose, on the protocol of ``compare_defences`` (its selection split, halves
    and tolerance; ``scores``: its ``head_ablation`` details' scores):

    - ``effects``: the ``n_heads`` top-scored heads, each ablated alone on the half of the selection split that
      checks the clean tolerance: clean cost and typographic gain (``defences.heads.head_effects``);
    - ``skip``: the greedy search (the same ranking and keep rule) that passes over a head rejected for its clean
      cost instead of stopping (``skip_rejected``), its heads, and their classifier on the held-out sets
      (``metrics``) against zero-shot (``verdicts``: paired differences on the test images). Cached by model, data,
      scores and protocol."""
    setting = DefenceSetting(select_n=select_n, clean_tolerance=clean_tolerance, seed=seed)
    ctx = DefenceContext(lm, classes, sets, "embedded", None, None, setting, progress=progress, cache=cache)

    def run():
        sel, half = ctx.sel, len(ctx.sel["true"]) // 2
        names = sorted(scores, key=lambda n: -scores[n])[:n_heads]
        effects = [{**r, "score": scores[r["head"]]} for r in head_effects(
            lm.model, ctx.base.text, names, sel["clean"][half:], sel["typo"][half:], sel["true"][half:])]
        res = _greedy_on_selection(ctx, scores=scores, skip_rejected=True)
        clf = model_classifier(ablate(lm.model, res.heads), lm.tokenizer, ctx.classes, ctx.templates)
        metrics, correct = ctx.evaluate(clf, return_correct=True)
        verdicts = paired_verdicts({"head_ablation_skip": correct, "zero_shot": ctx.reference_correct},
                                   [("head_ablation_skip", "zero_shot")])
        return {"effects": effects, "selected_on": ctx.selection_split,
                "skip": {"heads": [h.name for h in res.heads], "log": res.log, "metrics": metrics,
                         "verdicts": verdicts}}

    return ctx.cached("head-diagnosis", [sorted(scores.items()), n_heads, clean_tolerance, seed, select_n,
                                         ctx.selection_key, "dyslexify keep rule", HEAD_MIN_GAIN, HEAD_PATIENCE], run)


def flat_metrics(runs: DefenceRuns) -> dict:
    """``<defence>_{typo,clean}_top1`` for every row with its ``_ci`` (and, over seeds, ``_std``) (notebook 07's
    flat metric keys)."""
    return {f"{d}_{k}{x}": r[f"{k}{x}"] for d, r in runs.results.items() for k in ("typo_top1", "clean_top1")
            for x in ("", "_ci", "_std") if f"{k}{x}" in r}


# the rows notebook 07 shows for a second image tower (issue 27): zero-shot, the preference methods that contend for
# best (DPO and KTO), CE, PAINT on CE and on DPO, the projection and head ablation. IPO is left out (issue 28's cut,
# ~160 s of a cold run): on the conv tower it is the weakest PO method, typographic top-1 0.671 [0.644, 0.697]
# against DPO 0.757 [0.732, 0.783] and KTO 0.787 [0.762, 0.810] (3 seeds), and on the ViT, when it was run, too
# (0.614 against 0.655 and 0.671, one seed); pass ``only=`` to run it there
TOWER_ROWS = ("zero_shot", "dpo", "kto", "ce", "paint_ce", "paint_dpo", "projection", "head_ablation")


def tower_po_methods() -> list[str]:
    """The registered preference methods among ``TOWER_ROWS`` (what notebook 08 trains on a second tower by
    default, so that it reads 07's runs and finds the same best method)."""
    from ..losses.po import po_methods

    return [m for m in TOWER_ROWS if m in po_methods(baseline=False)]


def towers_table(runs: dict, keys=("clean_top1", "typo_top1", "typo_heldout_top1", "typo_unseen_top1")) -> list[dict]:
    """One row per (model, defence) of ``runs`` (model -> DefenceRuns): the training seeds behind it ("-": it trains
    nothing) and
    each key with its 95 % interval over the test images (``evaluation.stats.with_interval``), the best preference
    method of each model marked."""
    from ..evaluation.stats import with_interval

    rows, registry = [], defences()
    for model, r in runs.items():
        best = best_po_method(r.results)
        for d, m in r.results.items():
            rows.append({"model": model, "defence": d + (" (best PO)" if d == best else ""),
                         "training seeds": len(r.seeds) if registry[d].trains else "-",
                         **{k: with_interval(m, k) for k in keys if k in m}})
    return rows


def merged_results(runs: dict) -> dict:
    """``{"<defence> · <model>": metrics}`` of several models' DefenceRuns, for one Pareto figure."""
    return {f"{d} · {model}": m for model, r in runs.items() for d, m in r.results.items()}
