"""Training-free ablation of the image tower's attention heads that carry the written word, in the spirit of
Hufe et al. ("Towards mechanistic defenses against typographic attacks in CLIP" / "Dyslexify", 2025): score every
attention head by how much of the written word its output carries into the pooled image embedding, then zero the
top-scoring heads greedily while clean accuracy on a validation split stays within a tolerance.

A head h of an attention layer with output projection W_O (d_out x H d_head) contributes
W_O[:, h d_head:(h+1) d_head] o_h to the layer's output at every position. In a ViT (every block's
``nn.MultiheadAttention``), ablating a head removes, as Dyslexify does, only its contribution to the class token
(position 0): a forward hook subtracts W_O[:, h] softmax(q_0 k^T / sqrt(d)) v_h from the class token's output and
leaves the patches' outputs alone. In the attention pooling of open_clip's modified ResNet (the tiny conv tower:
its pooling heads are its only attention) the pooled token is the only output, and the head's output-projection
columns are zeroed. The score of a head is its ablation effect on the attack: the drop of the mean
margin cos(x, t_written) - cos(x, t_true) over attacked probe images when that head alone is zeroed."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn


@dataclass(frozen=True)
class Head:
    module: str  # the attention module's name inside the image tower
    index: int
    head_dim: int

    @property
    def name(self) -> str:
        return f"{self.module or 'visual'}#{self.index}"


def _out_proj(m: nn.Module) -> tuple[torch.Tensor, int] | None:
    from open_clip.modified_resnet import AttentionPool2d

    if isinstance(m, AttentionPool2d):
        return m.c_proj.weight, m.num_heads
    out = getattr(m, "out_proj", None)
    heads = getattr(m, "num_heads", None)
    if isinstance(out, nn.Linear) and isinstance(heads, int) and out.weight.shape[1] % heads == 0:
        return out.weight, heads
    return None


def attention_heads(model) -> list[Head]:
    """Every attention head of ``model.visual``, in module order."""
    heads = []
    for name, m in model.visual.named_modules():
        found = _out_proj(m)
        if found is not None:
            w, n = found
            heads += [Head(name, h, w.shape[1] // n) for h in range(n)]
    if not heads:
        raise TypeError(f"no attention heads found in the image tower ({type(model.visual).__name__}): head "
                        f"ablation needs a ViT or an attention-pooled ResNet tower")
    return heads


class ClassTokenAblation:
    """A forward hook for an ``nn.MultiheadAttention`` whose query position 0 is a class token: subtracts the
    listed heads' contribution to that position's output (their attention from the class token times their values,
    through their columns of the output projection). The patches' outputs are untouched. Holds no module, so a
    deep copy of the model copies it with the model."""

    def __init__(self, heads):
        self.heads = sorted(set(int(h) for h in heads))

    def fingerprint_token(self) -> str:  # clipwb.cache.fingerprint tells an ablated model from the original
        return f"ClassTokenAblation{self.heads}"

    def contribution(self, module: nn.MultiheadAttention, q_x, k_x, v_x) -> torch.Tensor:
        """(N, E) the listed heads' summed contribution to the class token's output (batch-first inputs)."""
        from ..evaluation.reading import head_projections

        q, k, v = head_projections(module, q_x[:, :1], k_x, v_x)
        a = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # (N, H, 1, T)
        o = (a @ v)[:, :, 0]  # (N, H, d)
        d, w = o.shape[-1], module.out_proj.weight
        return sum(o[:, h] @ w[:, h * d:(h + 1) * d].T for h in self.heads)

    def __call__(self, module, args, out):
        from ..evaluation.reading import _batch_first

        q_x, k_x, v_x = (_batch_first(a, module) for a in args[:3])
        y = _batch_first(out[0], module).clone()
        y[:, 0] -= self.contribution(module, q_x, k_x, v_x).to(y.dtype)
        return (y if module.batch_first else y.transpose(0, 1)), *out[1:]


def ablate(model, heads: list[Head]) -> nn.Module:
    """A copy of ``model`` without ``heads``: in a ViT their contribution to the class token removed (a
    ``ClassTokenAblation`` hook per attention module), in attention pooling their output-projection columns zeroed."""
    out = copy.deepcopy(model)
    modules = dict(out.visual.named_modules())
    by_module: dict[str, list[int]] = {}
    with torch.no_grad():
        for h in heads:
            m = modules[h.module]
            if isinstance(m, nn.MultiheadAttention):
                by_module.setdefault(h.module, []).append(h.index)
            else:
                w, _ = _out_proj(m)
                w[:, h.index * h.head_dim:(h.index + 1) * h.head_dim] = 0
    for name, idx in by_module.items():
        modules[name].register_forward_hook(ClassTokenAblation(idx))
    return out.eval()


def _margin(model, text: torch.Tensor, images: np.ndarray, true, written) -> float:
    from ..models.inputs import encode_images

    f = encode_images(model, images)
    cos = f @ text.T
    true, written = torch.as_tensor(np.asarray(true)), torch.as_tensor(np.asarray(written))
    ok = written >= 0
    r = torch.arange(len(f))[ok]
    return float((cos[r, written[ok]] - cos[r, true[ok]]).mean())


def _clean_top1(model, text: torch.Tensor, images: np.ndarray, labels) -> float:
    from ..models.inputs import encode_images

    return float(((encode_images(model, images) @ text.T).argmax(-1).numpy() == np.asarray(labels)).mean())


@dataclass
class AblationResult:
    heads: list[Head]  # zeroed, in the order added
    scores: dict[str, float]  # head name -> ablation effect on the written-word margin
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def score_heads(model, text: torch.Tensor, typo: np.ndarray, true, written, progress: bool = False) -> dict:
    """head name -> (margin of the model) - (margin with that head zeroed), on attacked probe images."""
    from ..progress import tqdm

    base = _margin(model, text, typo, true, written)
    return {h.name: base - _margin(ablate(model, [h]), text, typo, true, written)
            for h in tqdm(attention_heads(model), disable=not progress, desc="head scores")}


def greedy_ablation(model, text: torch.Tensor, typo: np.ndarray, true, written, clean_val: np.ndarray, y_val,
                    tolerance: float = 0.01, max_heads: int | None = None, progress: bool = False,
                    skip_rejected: bool = False, scores: dict | None = None, typo_val: np.ndarray | None = None,
                    min_gain: float | None = None, patience: int = 10) -> AblationResult:
    """Score the heads on (``typo``, ``true``, ``written``), then zero heads in descending score (positive scores
    only) while the clean top-1 on (``clean_val``, ``y_val``) stays within ``tolerance`` of the unablated model's;
    stops at the first head that would break it (``skip_rejected``: passes over it and tries the next) or after
    ``max_heads``. ``scores``: precomputed scores (head name -> score; ``score_heads`` of the same images, or any
    ranking such as the typographic attention score), to skip the scoring.

    ``min_gain`` (with ``typo_val``, attacked images of the checking half with labels ``y_val``): the keep rule of
    Dyslexify's greedy selection (Hufe et al., their ``greedy_selection.py``: eps 0.001, patience 10): a head is kept
    only if it raises typographic top-1 on ``typo_val`` by at least ``min_gain`` over the heads kept so far; a head
    that does not is passed over, and the search ends after more than ``patience`` such heads in a row. (The authors
    keep the head whose clean cost crosses the budget and stop; here, as every defence of the comparison stays within
    the clean tolerance on the validation split, that head is not kept.)"""
    t0 = time.time()
    heads = {h.name: h for h in attention_heads(model)}
    scores = scores if scores is not None else score_heads(model, text, typo, true, written, progress)
    if min_gain is not None and typo_val is None:
        raise ValueError("min_gain needs typo_val: the attacked images whose top-1 a kept head must raise")
    base = _clean_top1(model, text, clean_val, y_val)
    typo_now = _clean_top1(model, text, typo_val, y_val) if min_gain is not None else None
    chosen, misses = [], 0
    log = [{"heads": 0, "clean_top1": base, "margin": _margin(model, text, typo, true, written),
            **({"typo_top1": typo_now} if typo_now is not None else {})}]
    for name in sorted((n for n in scores if scores[n] > 0), key=lambda n: -scores[n]):
        if max_heads is not None and len(chosen) >= max_heads:
            break
        trial = ablate(model, chosen + [heads[name]])
        clean = _clean_top1(trial, text, clean_val, y_val)
        if min_gain is not None:
            t = _clean_top1(trial, text, typo_val, y_val)
            if t - typo_now < min_gain:
                log.append({"heads": len(chosen) + 1, "no_gain": name, "clean_top1": clean, "typo_top1": t})
                misses += 1
                if misses > patience:
                    break
                continue
            misses = 0
        if clean < base - tolerance:
            log.append({"heads": len(chosen) + 1, "rejected": name, "clean_top1": clean})
            if skip_rejected:
                continue
            break
        chosen.append(heads[name])
        row = {"heads": len(chosen), "added": name, "clean_top1": clean,
               "margin": _margin(trial, text, typo, true, written)}
        if min_gain is not None:
            typo_now = row["typo_top1"] = t
        log.append(row)
    return AblationResult(chosen, scores, log, time.time() - t0)


def head_effects(model, text: torch.Tensor, names: list[str], clean: np.ndarray, typo: np.ndarray, labels) -> list[dict]:
    """Each named head ablated alone: its cost in clean top-1 and its gain in typographic top-1 on (``clean``,
    ``typo``, ``labels``), against the unablated model. Why a greedy search stops: a head that carries the written
    word *and* the object costs clean accuracy for what it gains."""
    heads = {h.name: h for h in attention_heads(model)}
    unknown = [n for n in names if n not in heads]
    if unknown:
        raise ValueError(f"no attention heads named {unknown}; the model's heads: {list(heads)[:4]}...")
    base_c, base_t = _clean_top1(model, text, clean, labels), _clean_top1(model, text, typo, labels)
    rows = []
    for n in names:
        m = ablate(model, [heads[n]])
        c, t = _clean_top1(m, text, clean, labels), _clean_top1(m, text, typo, labels)
        rows.append({"head": n, "clean_top1": c, "typo_top1": t, "clean_cost": base_c - c, "typo_gain": t - base_t})
    return rows


def top_heads(scores: dict, n: int = 12) -> dict:
    """The ``n`` highest-scoring heads of ``score_heads`` / ``greedy_ablation`` (name -> score), highest first."""
    return dict(sorted(scores.items(), key=lambda kv: -kv[1])[:n])
