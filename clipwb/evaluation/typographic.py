"""Zero-shot metrics of a typographic-attack set: clean top-1, typographic top-1 (against the true class) and the
attack-success rate (share of attacked images predicted as the written word; as in Afzali et al., ICLR 2025)."""
from __future__ import annotations

import numpy as np

from .classifier import ZeroShotClassifier, model_classifier
from .zeroshot import OBJECT_TEMPLATES, top1, zero_shot_logits


def typo_scores(cosines, true, written) -> dict:
    """typo_top1 and attack_success_rate (over images whose written word is a class, ``written >= 0``) of the
    predictions ``cosines.argmax(-1)``."""
    true, written = np.asarray(true), np.asarray(written)
    pred = cosines.argmax(-1).cpu().numpy()
    has_word = written >= 0
    return {"typo_top1": float((pred == true).mean()) if len(true) else float("nan"),
            "n_attack": int(has_word.sum()),
            "attack_success_rate": (float((pred[has_word] == written[has_word]).mean()) if has_word.any()
                                    else float("nan"))}


def typographic_metrics(model, tokenizer, classes, typo: np.ndarray, true, written, clean: np.ndarray | None = None,
                        templates=OBJECT_TEMPLATES, control: np.ndarray | None = None) -> dict:
    """Fractions in [0, 1]: ``typo_top1``, ``attack_success_rate`` (over images whose written word is a class,
    ``written >= 0``), given clean images ``clean_top1``, and given control images (a non-class word written
    exactly as the attack's class name) ``control_top1``; plus the counts ``n`` and ``n_attack``."""
    out = {"n": int(len(true)), **typo_scores(zero_shot_logits(model, tokenizer, typo, classes, templates), true,
                                                written)}
    if clean is not None:
        out["clean_top1"] = top1(zero_shot_logits(model, tokenizer, clean, classes, templates), true)
    if control is not None:
        out["control_top1"] = top1(zero_shot_logits(model, tokenizer, control, classes, templates), true)
    return out


FAMILIES = {"test": "", "test_heldout": "_heldout", "test_note": "_note", "test_unseen": "_unseen"}  # set -> suffix


def po_eval(model, tokenizer, classes, sets: dict, ref_model=None, templates=OBJECT_TEMPLATES,
            return_correct: bool = False):
    """The PO evaluation of one model on the standard held-out sets (arrays as from ``TypographicDataset.arrays``):
    ``classifier_eval`` of the model's zero-shot classifier, against the reference model's (``ref_model``: a model,
    or its ``ZeroShotClassifier``, e.g. ``classifier.memo_classifier``'s, whose features are then reused)."""
    ref = ref_model
    if ref_model is not None and not isinstance(ref_model, ZeroShotClassifier):
        ref = model_classifier(ref_model, tokenizer, classes, templates)
    return classifier_eval(model_classifier(model, tokenizer, classes, templates), sets, ref, return_correct)


def classifier_eval(clf: ZeroShotClassifier, sets: dict, ref: ZeroShotClassifier | None = None,
                    return_correct: bool = False):
    """One evaluation for every defence: clean_top1 (``test``'s clean images), then per attack family present
    (``test``, ``test_heldout``, ``test_note``, ``test_unseen`` -> suffix "", "_heldout", "_note", "_unseen"):
    typo<suffix>_top1, attack_success<suffix> and, where the set has control images, control<suffix>_top1 (a
    non-class word written the same way); every top-1 with its 95 % Wilson interval over the images
    (``<key>_ci`` = [low, high], ``evaluation.stats``); given the reference classifier, kl_drift = mean_i
    KL(pi_ref || pi) on the clean held-out images, each at its own logit scale and with its own class embeddings
    (Afzali et al., ICLR 2025). With ``return_correct``, also {"clean", "typo<suffix>", "control<suffix>": bool
    per image} for paired comparisons of two classifiers on the same images."""
    from ..losses.po import kl_ref_policy
    from .stats import top1_ci

    te = sets["test"]
    clean_cos = clf.cosines(te["clean"])  # once: top-1 and the KL drift read the same features
    correct, attack = {"clean": _correct(clean_cos, te["true"])}, {}
    for name, sfx in FAMILIES.items():
        if name not in sets:
            continue
        s = sets[name]
        cos = clf.cosines(s["typo"])
        correct[f"typo{sfx}"] = _correct(cos, s["true"])
        attack[f"attack_success{sfx}"] = typo_scores(cos, s["true"], s["written"])["attack_success_rate"]
        if "control" in s:
            correct[f"control{sfx}"] = _correct(clf.cosines(s["control"]), s["true"])
    out = {}
    for key, c in correct.items():
        # clean and control top-1 as zeroshot.top1 computes them (a float32 mean), typographic ones as typo_scores
        mean = c.astype(np.float32).mean(dtype=np.float32) if not key.startswith("typo") else c.mean()
        out[f"{key}_top1"] = float(mean) if len(c) else float("nan")
        out[f"{key}_top1_ci"] = list(top1_ci(c)) if len(c) else None
        if key.startswith("typo"):
            sfx = key[len("typo"):]
            out[f"attack_success{sfx}"] = attack[f"attack_success{sfx}"]
    if ref is not None:
        out["kl_drift"] = float(kl_ref_policy(ref.log_probs(te["clean"]), clf.log_probs_of(clean_cos)))
    return (out, correct) if return_correct else out


def _correct(cosines, true) -> np.ndarray:
    return cosines.argmax(-1).cpu().numpy() == np.asarray(true)


def recovery(after: dict, before: dict) -> dict:
    """The share of the reading damage a defence undoes, per attack family:
    recovery<suffix> = (typo_top1 after - typo_top1 before) / (control_top1 before - typo_top1 before), where
    "before" is the pretrained model and its control top-1 (a non-class word written the same way) is what the
    attacked images would score if the written class name cost no more than any text. 1 = all the damage undone,
    0 = none, < 0 = worse; NaN where the family has no control or no damage to undo. It mixes two damages (a gain
    can also come from text costing less by its mere presence, so it exceeds 1): ``damage`` takes them apart."""
    out = {}
    for sfx in FAMILIES.values():
        t_b, c_b, t_a = before.get(f"typo{sfx}_top1"), before.get(f"control{sfx}_top1"), after.get(f"typo{sfx}_top1")
        if t_b is None or c_b is None or t_a is None:
            continue
        gap = c_b - t_b
        out[f"recovery{sfx}"] = float((t_a - t_b) / gap) if gap > 1e-9 else float("nan")
    return out


def damage(after: dict, before: dict | None = None) -> dict:
    """The two damages text does, per attack family with controls (suffix as in ``classifier_eval``):

    - ``presence_damage<sfx>`` = clean_top1 - control<sfx>_top1: what any written word costs by being there;
    - ``reading_damage<sfx>`` = control<sfx>_top1 - typo<sfx>_top1: what it costs *more* when the word is a class
      name, i.e. what the model reads;

    and, given the pretrained model's metrics ``before``, their recoveries ``reading_recovery<sfx>`` = 1 - reading
    after / reading before and ``presence_recovery<sfx>`` likewise (1: that damage gone, 0: unchanged, < 0: worse;
    NaN where there was none before)."""
    out = {}
    for sfx in FAMILIES.values():
        keys = ("clean_top1", f"control{sfx}_top1", f"typo{sfx}_top1")
        if any(after.get(k) is None for k in keys):
            continue
        out[f"presence_damage{sfx}"] = float(after["clean_top1"] - after[f"control{sfx}_top1"])
        out[f"reading_damage{sfx}"] = float(after[f"control{sfx}_top1"] - after[f"typo{sfx}_top1"])
        if before is None or any(before.get(k) is None for k in keys):
            continue
        for kind in ("presence", "reading"):
            b = (before["clean_top1"] - before[f"control{sfx}_top1"] if kind == "presence"
                 else before[f"control{sfx}_top1"] - before[f"typo{sfx}_top1"])
            out[f"{kind}_recovery{sfx}"] = float(1 - out[f"{kind}_damage{sfx}"] / b) if b > 1e-9 else float("nan")
    return out


def gain_kept(after: dict, before: dict) -> dict:
    """How much of the in-distribution gain survives in each other attack family: ``gain_kept<sfx>`` =
    (typo<sfx>_top1 after - before) / (typo_top1 after - before) for the held-out, note and unseen families (1: all
    of it, 0: none; NaN where there was no in-distribution gain)."""
    out = {}
    g = after.get("typo_top1", float("nan")) - before.get("typo_top1", float("nan"))
    for sfx in (s for s in FAMILIES.values() if s):
        if after.get(f"typo{sfx}_top1") is None or before.get(f"typo{sfx}_top1") is None:
            continue
        out[f"gain_kept{sfx}"] = (float((after[f"typo{sfx}_top1"] - before[f"typo{sfx}_top1"]) / g) if g > 1e-9
                                  else float("nan"))
    return out


def against(after: dict, before: dict) -> dict:
    """Everything a model's metrics say relative to the pretrained model's: ``recovery``, ``damage`` (with the
    recoveries) and ``gain_kept``, per attack family."""
    return {**recovery(after, before), **damage(after, before), **gain_kept(after, before)}


def linear_probe_typo(model, sets: dict, C: float = 1.0, seed: int = 0) -> dict:
    """How much of the true class survives in a model's features of attacked images: a logistic-regression probe
    (scikit-learn) fitted on the frozen features of ``sets["train"]["typo"]`` and scored on ``sets["test"]``'s
    attacked and clean images. A diagnostic of what a defence that does not change the features could reach."""
    from ..models.inputs import encode_images
    from .probes import fit_probe

    f_tr = encode_images(model, sets["train"]["typo"]).cpu().numpy()
    clf = fit_probe(f_tr, sets["train"]["true"], C=C, seed=seed)
    te = sets["test"]
    return {"probe_train_top1": float(clf.score(f_tr, sets["train"]["true"])),
            "probe_typo_top1": float(clf.score(encode_images(model, te["typo"]).cpu().numpy(), te["true"])),
            "probe_clean_top1": float(clf.score(encode_images(model, te["clean"]).cpu().numpy(), te["true"]))}


def world_probe_ceiling(model, world, n_train: int = 4096, n_test: int = 1024, C: float = 1.0, seed: int = 0) -> float:
    """The linear-probe ceiling on attacked world images: logistic regression (scikit-learn) fitted on the frozen
    features of ``n_train`` attacked ``train`` images, scored on ``n_test`` attacked ``test`` images (true class).
    How much of the object survives the written word in the features, i.e. the room a defence has."""
    from ..models.inputs import encode_images
    from .probes import probe_top1

    tr = world.generate(n_train, "train", "typographic")
    te = world.generate(n_test, "test", "typographic")
    return probe_top1(encode_images(model, tr.images).cpu().numpy(), tr.labels("class_name", world.classes),
                      encode_images(model, te.images).cpu().numpy(), te.labels("class_name", world.classes),
                      C=C, seed=seed)
