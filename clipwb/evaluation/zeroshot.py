"""Zero-shot classification with prompt templates and cached text features.

The classifier is CLIP's: the class embedding is the normalised mean over templates of the normalised text
features; the prediction is argmax of the cosine. Text features are cached per (model, classes, templates)
so that repeated evaluations of one model encode the prompts once.
"""
from __future__ import annotations

import time
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from ..models.inputs import encode_images, model_device

OBJECT_TEMPLATES = ("a photo of a {}.", "a {}.", "a drawing of a {}.", "an icon of a {}.")
PORTRAIT_TEMPLATES = ("a photo of a {}.", "a portrait of a {}.")

_TEXT_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _param_version(model) -> int:
    # in-place optimiser updates bump tensor versions: a trained model never reuses stale features
    return sum(p._version for p in model.parameters())


def template_mean(prompt_features: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C * T, d) prompt features, class-major -> (C, d) class embeddings: the normalised mean over templates of
    the normalised prompt features (differentiable)."""
    f = F.normalize(prompt_features.float(), dim=-1)
    return F.normalize(f.view(n_classes, -1, f.shape[-1]).mean(1), dim=-1)


@torch.no_grad()
def class_text_features(model, tokenizer, classnames, templates=OBJECT_TEMPLATES) -> torch.Tensor:
    """(C, d) normalised class embeddings: mean over templates of normalised prompt features (cached)."""
    key = (tuple(classnames), tuple(templates), _param_version(model))
    cache = _TEXT_CACHE.setdefault(model, {})
    if key in cache:
        return cache[key]
    was_training = model.training
    model.eval()
    prompts = [t.format(c) for c in classnames for t in templates]
    tok = tokenizer(prompts).to(model_device(model))
    cls = template_mean(model.encode_text(tok), len(classnames))
    model.train(was_training)
    cache.clear()
    cache[key] = cls
    return cls


@torch.no_grad()
def zero_shot_logits(model, tokenizer, images, classnames, templates=OBJECT_TEMPLATES,
                     image_features: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarities (n, C) between images and class embeddings."""
    img = image_features if image_features is not None else encode_images(model, images)
    return img @ class_text_features(model, tokenizer, classnames, templates).T


def top1(logits: torch.Tensor, labels) -> float:
    labels = torch.as_tensor(np.asarray(labels), device=logits.device)
    return float((logits.argmax(-1) == labels).float().mean()) if len(labels) else float("nan")


def world_zero_shot_suite(model, tokenizer, world, n: int = 1024, split: str = "test",
                          return_predictions: bool = False):
    """The embedded world's standard zero-shot checks on freshly generated held-out images.

    Returns fractions in [0, 1]: zero_shot_clean_top1 (objects), zero_shot_typo_top1 (a different class
    name written on the same objects; top-1 against the true class), attack_success (share predicted as the
    written word), zero_shot_control_top1 (a non-class word written the same way: the cost of text that is no
    class name), the same three for the note-style attack (zero_shot_note_top1, note_attack_success,
    zero_shot_note_control_top1: the word on a paper patch), text_read_top1 (a word alone, predicted as that word's class), gender_top1 and
    occupation_top1 (portraits, balanced cells), ``n`` and ``seconds``. With ``return_predictions`` also a second
    dict of int arrays, per image: pred_clean, true_clean, pred_typo, written_typo and pred_control (the control
    images are the clean objects with a non-class word: ``true_clean`` is their class too).
    """
    t0 = time.time()
    classes = world.classes
    clean = world.generate(n, split, "object")
    typo = world.generate(n, split, "typographic")
    ctrl = world.generate(n, split, "object_other_text")
    note = world.generate(n, split, "typographic_note")
    note_ctrl = world.generate(n, split, "object_other_note")
    text = world.generate(max(n // 2, 16), split, "text")
    port = world.generate(max(n // 2, 24), split, "portrait")
    y = clean.labels("class_name", classes)
    yw = typo.labels("text", classes)
    lc = zero_shot_logits(model, tokenizer, clean.images, classes)
    lt = zero_shot_logits(model, tokenizer, typo.images, classes)
    lk = zero_shot_logits(model, tokenizer, ctrl.images, classes)
    ln = zero_shot_logits(model, tokenizer, note.images, classes)
    lnk = zero_shot_logits(model, tokenizer, note_ctrl.images, classes)
    lx = zero_shot_logits(model, tokenizer, text.images, classes)
    pf = encode_images(model, port.images)
    lg = zero_shot_logits(model, tokenizer, None, world.genders, PORTRAIT_TEMPLATES, image_features=pf)
    lo = zero_shot_logits(model, tokenizer, None, world.occupations, PORTRAIT_TEMPLATES, image_features=pf)
    metrics = {
        "zero_shot_clean_top1": top1(lc, y),
        "zero_shot_typo_top1": top1(lt, y),
        "attack_success": top1(lt, yw),
        "zero_shot_control_top1": top1(lk, y),
        "zero_shot_note_top1": top1(ln, y),
        "note_attack_success": top1(ln, note.labels("text", classes)),
        "zero_shot_note_control_top1": top1(lnk, y),
        "text_read_top1": top1(lx, text.labels("text", classes)),
        "gender_top1": top1(lg, port.labels("gender", world.genders)),
        "occupation_top1": top1(lo, port.labels("occupation", world.occupations)),
        "n": n,
        "seconds": time.time() - t0,
    }
    if not return_predictions:
        return metrics
    return metrics, {"pred_clean": lc.argmax(-1).cpu().numpy(), "true_clean": np.asarray(y),
                     "pred_typo": lt.argmax(-1).cpu().numpy(), "written_typo": np.asarray(yw),
                     "pred_control": lk.argmax(-1).cpu().numpy()}
