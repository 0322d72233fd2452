"""Notebook 08's driver: where a ViT CLIP reads the written word, before and after PO.

``reading_sets`` draws attacked images (an object with another class name written beside it) of the world's val
and test splits with their object label, written-word label and text box; ``reading_analysis`` runs one pass of a
ViT over them (``evaluation.reading.read_vit``) and returns per layer the linear-probe top-1 of the class token for
the object and for the written word (probes fitted on val, scored on test, with Wilson intervals), and per head the
typographic attention score on test, stored in the run cache under the model's fingerprint and the data's.
``attention_examples`` gives the class-token attention maps of a few images for chosen heads; ``head_ranking`` the
typographic attention score of every head on attacked validation images, the order in which Dyslexify's greedy
selection (notebook 07's ``head_ablation``) tries the heads."""
from __future__ import annotations

import numpy as np

from ..cache import cached_json, fingerprint
from ..evaluation.reading import (box_patch_mask, read_vit, top_reading_heads, typographic_attention_score,
                                  vit_grid)
from ..evaluation.stats import wilson_ci


def reading_sets(world, n_val: int, n_test: int, kind: str = "typographic") -> dict:
    """{val, test}: attacked world images (``kind``) with ``images``, ``label`` (object), ``written`` (the written
    class) and ``boxes`` (x, y, w, h of the text in pixels); the val images fit the probes, the test images score."""
    return {split: _reading_split(world, n, split, kind) for split, n in (("val", n_val), ("test", n_test))}


def _reading_split(world, n: int, split: str, kind: str = "typographic") -> dict:
    b = world.generate(n, split, kind, progress=False)
    return {"images": b.images, "label": np.array(b.column("label")), "written": np.array(b.column("written_label")),
            "boxes": np.array([[r["text_x"], r["text_y"], r["text_w"], r["text_h"]] for r in b.records])}


def head_ranking(model, world, n: int = 1024, cache: bool = True) -> dict | None:
    """{head name (``defences.heads.attention_heads``): typographic attention score} of a ViT image tower on ``n``
    attacked images of the world's validation split (the score Dyslexify ranks heads by: the class token's attention
    mass on the text's patches), for ``compare_defences(head_scores=)``; None for a tower that is not a ViT (the conv
    tower's attention pooling has no class token; head ablation then ranks by the margin effect). Cached by the
    model's weights and the images."""
    from ..defences.heads import attention_heads
    from ..evaluation.reading import is_vit

    if not is_vit(model):
        return None
    val = _reading_split(world, n, "val")

    def run():
        att = read_vit(model, val["images"])["attention"]
        score = typographic_attention_score(att, box_patch_mask(val["boxes"], val["images"].shape[1], vit_grid(model)))
        heads = attention_heads(model)
        if len(heads) != score.size:
            raise ValueError(f"{len(heads)} attention heads but {score.size} attention scores: the tower has attention "
                             f"modules outside its transformer blocks")
        return {h.name: float(v) for h, v in zip(heads, score.reshape(-1))}

    return cached_json("head-ranking", [fingerprint(model), fingerprint(val)], run, enabled=cache)


def _probe_rows(val_states, test_states, val, test, key) -> dict:
    from ..evaluation.reading import layer_probes

    acc = layer_probes(val_states, val[key], test_states, test[key])
    n = len(test[key])
    return {"top1": acc.tolist(), "ci": [list(wilson_ci(int(round(a * n)), n)) for a in acc]}


def reading_analysis(model, rsets: dict, cache: bool = True) -> dict:
    """Per layer: class-token probe top-1 (``probe_object``, ``probe_word``: {top1, ci}); per head: the typographic
    attention score (``score``, layers x heads, on test) and the top five heads (``top_heads``)."""
    def run():
        val = read_vit(model, rsets["val"]["images"], attention=False)
        test = read_vit(model, rsets["test"]["images"])
        size = rsets["test"]["images"].shape[1]
        mask = box_patch_mask(rsets["test"]["boxes"], size, vit_grid(model))
        score = typographic_attention_score(test["attention"], mask)
        return {"probe_object": _probe_rows(val["states"], test["states"], rsets["val"], rsets["test"], "label"),
                "probe_word": _probe_rows(val["states"], test["states"], rsets["val"], rsets["test"], "written"),
                "score": score.tolist(), "top_heads": top_reading_heads(score, 5),
                "text_patch_share": float(mask.mean()), "n_test": len(mask)}

    return cached_json("reading", [fingerprint(model), fingerprint(rsets)], run, enabled=cache)


def attention_examples(model, images: np.ndarray, heads: list[dict]) -> np.ndarray:
    """(n_images, n_heads, rows, cols): the class token's attention to the patches of each head in ``heads``
    ([{layer, head}], as ``top_heads``), for drawing over the images."""
    att = read_vit(model, images)["attention"]  # (L, N, H, T)
    gh, gw = vit_grid(model)
    return np.stack([np.stack([att[h["layer"], i, h["head"], 1:].reshape(gh, gw) for h in heads])
                     for i in range(len(images))])
