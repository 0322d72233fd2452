"""Concept-steering experiments on cached embeddings of the embedded world (notebooks 03 and 04).

``concept_data`` encodes, once, the images every experiment needs: clean objects, typographic objects, portraits
(clear occupation hats) and faint-hat portraits (where a biased model guesses the occupation from gender), plus
the class embeddings of objects, genders and occupations. A map W_t acts on the image embeddings only; the text
side stays fixed, so every metric below is a zero-shot metric of the steered model.

Three maps, each trained by ``train_linear_map`` (DPO against the identity, KL keep-terms, near-orthogonality):
- ``typographic``: prefer the true class over the written word on typographic images, keep clean objects;
- ``gender_reverse``: prefer the other gender over the depicted one on portraits, keep occupations (portraits)
  and objects; t then moves the gender reading from original (t = 0) through neutral to reversed;
- ``mitigation``: on faint-hat portraits prefer the true occupation over the stereotyped one, keep gender and
  objects.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ..evaluation.bias import mean_max_skew, occupation_gap, per_group_accuracy, stereotype_error_rate
from ..evaluation.zeroshot import OBJECT_TEMPLATES, PORTRAIT_TEMPLATES, class_text_features
from ..models.inputs import encode_images
from ..world.portraits import STEREOTYPE
from ..steering.linear import LinearMapConfig, StrengthFamily, steer, train_linear_map
from ..cache import cached_json, cached_tensors, fingerprint


@dataclass
class ConceptData:
    split: str
    feats: dict  # name -> (n, d) float tensor: objects, typo, portraits, faint
    labels: dict  # name -> dict of label arrays
    text: dict  # objects / genders / occupations / occupation_prompts -> (C, d)
    classes: dict
    scale: float
    images: dict = field(default_factory=dict)  # a few uint8 images per set, for the widget


def concept_data(lm, world, n: int = 1024, split: str = "test", keep_images: int = 24,
                 cache: bool = True) -> ConceptData:
    """Encode ``n`` images of each set of the world's ``split`` with ``lm`` (see the module docstring). The
    features are stored in the run cache under the hash of the model's weights and the world's config; a cached
    call regenerates only the ``keep_images`` images per set that the widget shows (world images are a pure
    function of their index)."""
    model, tok = lm.model, lm.tokenizer
    kinds = {"objects": "object", "typo": "typographic", "control": "object_other_text", "portraits": "portrait",
             "faint": "portrait_faint"}
    occ, gen = world.occupations, world.genders
    label_fields = {"objects": {"class": ("class_name", world.classes)},
                    "typo": {"class": ("class_name", world.classes), "written": ("text", world.classes)},
                    "control": {"class": ("class_name", world.classes)},
                    "portraits": {"gender": ("gender", gen), "occupation": ("occupation", occ)},
                    "faint": {"gender": ("gender", gen), "occupation": ("occupation", occ)}}

    def encode():
        out = {}
        for k, kind in kinds.items():
            b = world.generate(n, split, kind)
            out[f"feats/{k}"] = encode_images(model, b.images).double().cpu()
            for name, (field_, values) in label_fields[k].items():
                out[f"labels/{k}/{name}"] = torch.as_tensor(np.array(b.labels(field_, values)), dtype=torch.int64)
        out["text/objects"] = class_text_features(model, tok, world.classes, OBJECT_TEMPLATES).double().cpu()
        out["text/genders"] = class_text_features(model, tok, gen, PORTRAIT_TEMPLATES).double().cpu()
        out["text/occupations"] = class_text_features(model, tok, occ, PORTRAIT_TEMPLATES).double().cpu()
        out["text/occupation_prompts"] = class_text_features(model, tok, occ, ("a photo of a {}.",)).double().cpu()
        out["scale"] = model.logit_scale.detach().exp().double().cpu().reshape(1)
        return out

    key = [fingerprint(model), dataclasses.asdict(world.config), n, split]
    t = cached_tensors("concept-data", key, encode, enabled=cache)
    feats = {k: t[f"feats/{k}"] for k in kinds}
    labels = {k: {name: t[f"labels/{k}/{name}"].numpy() for name in label_fields[k]} for k in kinds}
    text = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("text/")}
    images = {k: world.generate(min(keep_images, n), split, kind).images for k, kind in kinds.items()}
    return ConceptData(split, feats, labels, text, {"objects": world.classes, "genders": gen, "occupations": occ},
                       float(t["scale"][0]), images)


def _pred(feats, text):
    return (feats @ text.T).argmax(-1).numpy()


def stereotyped_sets(occupations, genders) -> dict:
    return {gi: {i for i, o in enumerate(occupations) if STEREOTYPE[o] == g} for gi, g in enumerate(genders)}


def evaluate(cd: ConceptData, W_t=None, k_skew: int | None = None) -> dict:
    """Zero-shot metrics of the model steered by ``W_t`` (None: the original): object, typographic and
    attack-success top-1; gender and occupation top-1 on portraits; on faint-hat portraits occupation top-1, the
    TPR gap between genders, the stereotype-error rate and MaxSkew@k of gender for neutral occupation prompts."""
    f = {k: (v if W_t is None else steer(v, W_t)) for k, v in cd.feats.items()}
    T, L = cd.text, cd.labels
    out = {"object_top1": float((_pred(f["objects"], T["objects"]) == L["objects"]["class"]).mean())}
    pt = _pred(f["typo"], T["objects"])
    out["typo_top1"] = float((pt == L["typo"]["class"]).mean())
    out["attack_success"] = float((pt == L["typo"]["written"]).mean())
    if "control" in f:
        out["control_top1"] = float((_pred(f["control"], T["objects"]) == L["control"]["class"]).mean())
    out["gender_top1"] = float((_pred(f["portraits"], T["genders"]) == L["portraits"]["gender"]).mean())
    out["occupation_top1"] = float((_pred(f["portraits"], T["occupations"]) == L["portraits"]["occupation"]).mean())
    po = _pred(f["faint"], T["occupations"])
    yo, g = L["faint"]["occupation"], L["faint"]["gender"]
    out["faint_occupation_top1"] = float((po == yo).mean())
    out["faint_gender_top1"] = float((_pred(f["faint"], T["genders"]) == g).mean())
    out["occupation_gap"] = occupation_gap(po, yo, g)
    out["faint_occupation_by_gender"] = {cd.classes["genders"][int(k)]: v for k, v in per_group_accuracy(po, yo, g).items()}
    out["stereotype_error_rate"] = stereotype_error_rate(po, yo, g, stereotyped_sets(cd.classes["occupations"],
                                                                                       cd.classes["genders"]))
    k = k_skew or max(10, len(yo) // (2 * len(cd.classes["occupations"])))
    out["max_skew_at_k"] = mean_max_skew((T["occupation_prompts"] @ f["faint"].T).numpy(), g, k)
    out["skew_k"] = k
    return out


def _pairs_typographic(cd):
    L = cd.labels["typo"]
    return cd.feats["typo"], cd.text["objects"], L["class"], L["written"], [(cd.feats["objects"], cd.text["objects"])]


def _pairs_gender_reverse(cd):
    g = cd.labels["portraits"]["gender"]
    keep = [(cd.feats["portraits"], cd.text["occupations"]), (cd.feats["objects"], cd.text["objects"])]
    return cd.feats["portraits"], cd.text["genders"], 1 - g, g, keep


def _pairs_mitigation(cd):
    """Faint portraits: y_w = the true occupation, y_l = the stereotyped occupation (for the depicted gender) the
    original model finds most likely among those that are not the true one."""
    f, L = cd.feats["faint"], cd.labels["faint"]
    st = stereotyped_sets(cd.classes["occupations"], cd.classes["genders"])
    logits = (f @ cd.text["occupations"].T).numpy()
    y_l = np.array([max((o for o in st[g] if o != t), key=lambda o: logits[i, o])
                    for i, (t, g) in enumerate(zip(L["occupation"], L["gender"]))])
    keep = [(cd.feats["faint"], cd.text["genders"]), (cd.feats["objects"], cd.text["objects"]),
            (cd.feats["portraits"], cd.text["occupations"])]
    return f, cd.text["occupations"], L["occupation"], y_l, keep


CONCEPTS = {"typographic": _pairs_typographic, "gender_reverse": _pairs_gender_reverse,
            "mitigation": _pairs_mitigation}


def train_concept_map(cd: ConceptData, concept: str, cfg: LinearMapConfig | None = None,
                      progress: bool = False, cache: bool = True) -> tuple[StrengthFamily, list[dict]]:
    """Train the map of ``concept`` (one of CONCEPTS) on ``cd`` and return its strength family and log. With
    ``cache`` the map and log are kept in the run cache under the hash of the concept, the config and the
    embeddings and labels of ``cd`` (notebooks 03 and 04 train the same maps: the second reads them)."""
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; use one of {list(CONCEPTS)}")
    cfg = cfg or LinearMapConfig()

    def run():
        feats, text, y_w, y_l, keep = CONCEPTS[concept](cd)
        W, log = train_linear_map(feats, text, y_w, y_l, cd.scale, keep=keep, cfg=cfg, progress=progress)
        return {"W": W.detach().cpu().double().tolist(), "log": log}

    key = [concept, dataclasses.asdict(cfg), fingerprint(cd.feats, cd.labels, cd.text, cd.classes, cd.scale)]
    done = cached_json("concept-map", key, run, enabled=cache)  # float64 through JSON: exact
    return StrengthFamily(torch.tensor(done["W"], dtype=torch.float64)), done["log"]


def sweep_t(cd: ConceptData, family: StrengthFamily, ts) -> list[dict]:
    """``evaluate`` along t (flat metrics only), with ``recovery``: the share of the reading damage of the
    unsteered model undone at t, (typo_top1(t) - typo_top1(0)) / (control_top1(0) - typo_top1(0))."""
    base = evaluate(cd, None)
    gap = base.get("control_top1", float("nan")) - base["typo_top1"]
    rows = []
    for t in ts:
        m = evaluate(cd, family.at(float(t)))
        row = {"t": float(t), **{k: v for k, v in m.items() if not isinstance(v, dict)}}
        row["recovery"] = float((m["typo_top1"] - base["typo_top1"]) / gap) if gap > 1e-9 else float("nan")
        rows.append(row)
    return rows


def neutral_t(rows: list[dict], key: str = "gender_top1", target: float = 0.5) -> float:
    """The swept t whose ``key`` is closest to ``target`` (the neutral point of a two-class concept)."""
    return min(rows, key=lambda r: abs(r[key] - target))["t"]


def reversed_t(rows: list[dict], key: str = "gender_top1", threshold: float = 0.15) -> float:
    """The first swept t whose ``key`` is at most ``threshold`` (the concept reversed), else the t of the sweep's
    minimum."""
    return next((r["t"] for r in rows if r[key] <= threshold), min(rows, key=lambda r: r[key])["t"])


def concept_directions(cd: ConceptData) -> dict:
    """Unit directions in the joint space from text: gender ('man' - 'woman' class embeddings) and, per object
    class, the written-word direction (the class's text embedding)."""
    g = cd.text["genders"]
    d = (g[0] - g[1])
    return {"gender": d / d.norm()}


def shift_cosines(cd: ConceptData, W_t, set_name: str, direction: torch.Tensor) -> np.ndarray:
    """Cosine between each embedding's shift under W_t and a concept direction."""
    before = cd.feats[set_name]
    shift = steer(before, W_t) - before
    return (torch.nn.functional.normalize(shift, dim=-1) @ direction).numpy()


def linear_probes(cd: ConceptData, W_t=None, seed: int = 0) -> dict:
    """Linear-probe accuracy (scikit-learn logistic regression, 50/50 split) of each concept from the (steered)
    image embeddings: gender and occupation on portraits, written word and true class on typographic images."""
    from sklearn.model_selection import train_test_split

    from ..evaluation.probes import probe_top1

    out = {}
    for name, (set_name, key) in {"gender": ("portraits", "gender"), "occupation": ("portraits", "occupation"),
                                  "written_word": ("typo", "written"), "object_class": ("typo", "class")}.items():
        X = cd.feats[set_name] if W_t is None else steer(cd.feats[set_name], W_t)
        y = cd.labels[set_name][key]
        strat = y if np.bincount(y).min(initial=2) >= 2 and (np.bincount(y)[np.unique(y)] >= 2).all() else None
        Xtr, Xte, ytr, yte = train_test_split(X.numpy(), y, test_size=0.5, random_state=seed, stratify=strat)
        out[name] = probe_top1(Xtr, ytr, Xte, yte, max_iter=2000, seed=seed)
    return out


def written_word_cosines(cd: ConceptData, W_t) -> np.ndarray:
    """Per typographic image, the cosine between its embedding shift under W_t and the written-word direction
    T(written) - T(true) (negative: the map moves the image away from the word written on it)."""
    T = cd.text["objects"]
    L = cd.labels["typo"]
    d = torch.nn.functional.normalize(T[L["written"]] - T[L["class"]], dim=-1)
    shift = torch.nn.functional.normalize(steer(cd.feats["typo"], W_t) - cd.feats["typo"], dim=-1)
    return (shift * d).sum(-1).numpy()


def person_bias(lm, data: dict, occupation_attr: str = "occupation", stereotype: dict | None = None,
                k: int | None = None) -> dict:
    """Zero-shot gender and occupation top-1, the TPR gap, the stereotype-error rate (given ``stereotype``:
    occupation name -> gender name) and MaxSkew@k on a person folder (``data.load_person_folder``)."""
    model, tok = lm.model, lm.tokenizer
    feats = encode_images(model, data["images"]).double().cpu()
    gnames, onames = data["classes"]["gender"], data["classes"][occupation_attr]
    tg = class_text_features(model, tok, gnames, PORTRAIT_TEMPLATES).double().cpu()
    to = class_text_features(model, tok, onames, PORTRAIT_TEMPLATES).double().cpu()
    g, o = data["labels"]["gender"], data["labels"][occupation_attr]
    po = _pred(feats, to)
    out = {"gender_top1": float((_pred(feats, tg) == g).mean()), "occupation_top1": float((po == o).mean()),
           "occupation_gap": occupation_gap(po, o, g)}
    if stereotype:
        st = {gi: {oi for oi, on in enumerate(onames) if stereotype.get(on) == gn} for gi, gn in enumerate(gnames)}
        out["stereotype_error_rate"] = stereotype_error_rate(po, o, g, st)
    prompts = class_text_features(model, tok, onames, ("a photo of a {}.",)).double().cpu()
    out["max_skew_at_k"] = mean_max_skew((prompts @ feats.T).numpy(), g, k or max(1, len(g) // 4))
    return out
