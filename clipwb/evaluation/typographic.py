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
