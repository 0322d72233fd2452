"""Zero-shot metrics of a typographic-attack set: clean top-1, typographic top-1 (against the true class) and the
attack-success rate (share of attacked images predicted as the written word; spec po_clip.md, "Evaluation")."""
from __future__ import annotations

import numpy as np

from .zeroshot import OBJECT_TEMPLATES, top1, zero_shot_logits


def typographic_metrics(model, tokenizer, classes, typo: np.ndarray, true, written, clean: np.ndarray | None = None,
                        templates=OBJECT_TEMPLATES) -> dict:
    """Fractions in [0, 1]: ``typo_top1``, ``attack_success_rate`` (over images whose written word is a class,
    ``written >= 0``) and, given clean images, ``clean_top1``; plus counts and the typographic predictions."""
    true, written = np.asarray(true), np.asarray(written)
    out = {"n": int(len(true))}
    lt = zero_shot_logits(model, tokenizer, typo, classes, templates)
    pred = lt.argmax(-1).cpu().numpy()
    out["typo_top1"] = float((pred == true).mean()) if len(true) else float("nan")
    has_word = written >= 0
    out["n_attack"] = int(has_word.sum())
    out["attack_success_rate"] = float((pred[has_word] == written[has_word]).mean()) if has_word.any() else float("nan")
    if clean is not None:
        out["clean_top1"] = top1(zero_shot_logits(model, tokenizer, clean, classes, templates), true)
    out["_pred_typo"] = pred
    return out


def kl_drift(model, ref_model, tokenizer, classes, clean: np.ndarray, templates=OBJECT_TEMPLATES) -> float:
    """mean_i KL(pi_ref(.|x_i) || pi_theta(.|x_i)) on clean images, each policy at its own logit scale and with its
    own class embeddings (spec po_clip.md, "Evaluation")."""
    import torch

    def logp(m):
        s = m.logit_scale.exp().float()
        return torch.log_softmax(s * zero_shot_logits(m, tokenizer, clean, classes, templates), dim=-1)

    from ..losses.po import kl_ref_policy

    with torch.no_grad():
        return float(kl_ref_policy(logp(ref_model), logp(model)))


def po_eval(model, tokenizer, classes, sets: dict, ref_model=None, templates=OBJECT_TEMPLATES) -> dict:
    """The PO evaluation of one model on the standard sets (``sets["test"]`` and ``sets["test_heldout"]``, arrays
    as from ``TypographicDataset.arrays``): clean_top1, typo_top1, attack_success, typo_heldout_top1,
    attack_success_heldout and, given the reference, kl_drift on the clean held-out images."""
    te = sets["test"]
    m = typographic_metrics(model, tokenizer, classes, te["typo"], te["true"], te["written"], clean=te["clean"],
                            templates=templates)
    out = {"clean_top1": m["clean_top1"], "typo_top1": m["typo_top1"], "attack_success": m["attack_success_rate"]}
    if "test_heldout" in sets:
        h = sets["test_heldout"]
        mh = typographic_metrics(model, tokenizer, classes, h["typo"], h["true"], h["written"], templates=templates)
        out.update(typo_heldout_top1=mh["typo_top1"], attack_success_heldout=mh["attack_success_rate"])
    if ref_model is not None:
        out["kl_drift"] = kl_drift(model, ref_model, tokenizer, classes, te["clean"], templates)
    return out


def linear_probe_typo(model, sets: dict, C: float = 1.0, seed: int = 0) -> dict:
    """How much of the true class survives in a model's features of attacked images: a logistic-regression probe
    (scikit-learn) fitted on the frozen features of ``sets["train"]["typo"]`` and scored on ``sets["test"]``'s
    attacked and clean images. A diagnostic of what a defence that does not change the features could reach."""
    from sklearn.linear_model import LogisticRegression

    from .zeroshot import encode_images

    f_tr = encode_images(model, sets["train"]["typo"]).cpu().numpy()
    clf = LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(f_tr, sets["train"]["true"])
    te = sets["test"]
    return {"probe_train_top1": float(clf.score(f_tr, sets["train"]["true"])),
            "probe_typo_top1": float(clf.score(encode_images(model, te["typo"]).cpu().numpy(), te["true"])),
            "probe_clean_top1": float(clf.score(encode_images(model, te["clean"]).cpu().numpy(), te["true"]))}
