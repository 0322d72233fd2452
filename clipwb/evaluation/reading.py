"""Where a ViT image tower reads the written word: its class token layer by layer, its heads' attention from the
class token to the patches, and the typographic attention score of every head (the analysis of Hufe et al.,
"Dyslexify", 2025: a few heads in the second half of a CLIP ViT attend to the text and write it into the class
token).

Everything here reads an open_clip ``VisionTransformer`` (``model.visual.transformer.resblocks``, each block's
``attn`` an ``nn.MultiheadAttention``) through forward hooks, so any open_clip ViT works unchanged: the tiny
``tiny-vit`` of the embedded world and ``ViT-B-32:openai`` alike. Layer l's class token is the residual stream at
position 0 after block l (layer 0: the input of the first block, after ``ln_pre``); head h's attention is
softmax(q_0 k^T / sqrt(d)) of the block's own projections, recomputed from the block's input."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def vit_blocks(model) -> list[nn.Module]:
    """The residual attention blocks of ``model.visual`` (a ViT), in order; a clear error for other towers."""
    tr = getattr(model.visual, "transformer", None)
    blocks = list(getattr(tr, "resblocks", []))
    if not blocks or not all(isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in blocks):
        raise TypeError(f"the image tower is a {type(model.visual).__name__}, not an open_clip ViT: reading heads, "
                        f"class-token probes and attention maps need a ViT tower (e.g. --model tiny-vit or "
                        f"ViT-B-32:openai)")
    return blocks


def is_vit(model) -> bool:
    try:
        vit_blocks(model)
        return True
    except TypeError:
        return False


def vit_grid(model) -> tuple[int, int]:
    """(rows, columns) of the ViT's patch grid."""
    g = model.visual.grid_size
    return (g, g) if isinstance(g, int) else tuple(g)


def _batch_first(x: torch.Tensor, attn: nn.MultiheadAttention) -> torch.Tensor:
    return x if attn.batch_first else x.transpose(0, 1)


def head_projections(attn: nn.MultiheadAttention, q_x: torch.Tensor, k_x: torch.Tensor, v_x: torch.Tensor):
    """(q, k, v) of every head, each (N, H, T, d), from an ``nn.MultiheadAttention``'s packed input projection and
    its (batch-first) inputs."""
    E, H = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    bq, bk, bv = (None, None, None) if b is None else b.split(E)
    wq, wk, wv = w.split(E)

    def heads(x, wt, bias):
        y = F.linear(x, wt, bias)
        return y.view(y.shape[0], y.shape[1], H, E // H).transpose(1, 2)

    return heads(q_x, wq, bq), heads(k_x, wk, bk), heads(v_x, wv, bv)


def class_token_weights(attn: nn.MultiheadAttention, q_x, k_x) -> torch.Tensor:
    """(N, H, T): each head's attention from the class token (position 0) to every token, batch-first inputs."""
    q, k, _ = head_projections(attn, q_x[:, :1], k_x, k_x)
    return torch.softmax((q @ k.transpose(-1, -2)).squeeze(2) / q.shape[-1] ** 0.5, dim=-1)


class _Record:
    """Forward hooks that keep, per block, the class token after it and its heads' class-token attention."""

    def __init__(self, blocks, attention: bool):
        self.states, self.attn = [None] * (len(blocks) + 1), [None] * len(blocks)
        self.handles = [blocks[0].register_forward_pre_hook(self._first)]
        for i, blk in enumerate(blocks):
            self.handles.append(blk.register_forward_hook(self._after(i)))
            if attention:
                self.handles.append(blk.attn.register_forward_hook(self._weights(i)))

    def _first(self, module, args):
        self.states[0] = _batch_first(args[0], module.attn)[:, 0].float()

    def _after(self, i):
        def hook(module, args, out):
            self.states[i + 1] = _batch_first(out, module.attn)[:, 0].float()
        return hook

    def _weights(self, i):
        def hook(module, args, out):
            q_x, k_x = (_batch_first(a, module) for a in args[:2])
            self.attn[i] = class_token_weights(module, q_x, k_x).float()
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def read_vit(model, images: np.ndarray, attention: bool = True, batch_size: int = 128) -> dict:
    """One pass over ``images`` (uint8 N x S x S x 3): ``states`` (L+1, N, width) the class token before the first
    block and after every block, ``attention`` (L, N, H, T) every head's class-token attention (T = 1 + patches)."""
    from ..models.inputs import images_to_tensor, model_device

    blocks = vit_blocks(model)
    was = model.training
    model.eval()
    rec, states, attn = _Record(blocks, attention), [], []
    try:
        for i in range(0, len(images), batch_size):
            model.encode_image(images_to_tensor(images[i:i + batch_size], model).to(model_device(model)))
            states.append(torch.stack(rec.states).cpu())
            if attention:
                attn.append(torch.stack(rec.attn).cpu())
    finally:
        rec.close()
        model.train(was)
    out = {"states": torch.cat(states, 1).numpy()}
    if attention:
        out["attention"] = torch.cat(attn, 1).numpy()
    return out


def box_patch_mask(boxes, image_size: int, grid: tuple[int, int], min_cover: float = 0.25) -> np.ndarray:
    """(N, P) boolean: the patches of a ``grid`` over ``image_size``-px images that the boxes (x, y, w, h in pixels)
    cover by at least ``min_cover`` of the patch's area."""
    gh, gw = grid
    ph, pw = image_size / gh, image_size / gw
    y0 = np.arange(gh)[:, None] * ph
    x0 = np.arange(gw)[None, :] * pw
    masks = []
    for x, y, w, h in boxes:
        ox = np.clip(np.minimum(x0 + pw, x + w) - np.maximum(x0, x), 0, None)
        oy = np.clip(np.minimum(y0 + ph, y + h) - np.maximum(y0, y), 0, None)
        masks.append(((ox * oy) / (pw * ph) >= min_cover).reshape(-1))
    return np.stack(masks)


def typographic_attention_score(attention: np.ndarray, text_mask: np.ndarray) -> np.ndarray:
    """(L, H) the mean over images of each head's class-token attention mass on the text's patches: 1 for a head
    that attends only to the text box, 0 for one that never does. ``attention`` (L, N, H, T) with the class token at
    position 0, ``text_mask`` (N, T - 1) over the patches."""
    attention, text_mask = np.asarray(attention, dtype=np.float64), np.asarray(text_mask, dtype=bool)
    if attention.shape[1] != text_mask.shape[0] or attention.shape[3] != text_mask.shape[1] + 1:
        raise ValueError(f"attention {attention.shape} (layers, images, heads, 1 + patches) does not fit the text "
                         f"mask {text_mask.shape} (images, patches)")
    keep = text_mask.any(1)
    if not keep.any():
        raise ValueError("no image has a text box on the patch grid: the score needs attacked images with text")
    mass = (attention[:, :, :, 1:] * text_mask[None, :, None, :]).sum(-1)  # (L, N, H)
    return mass[:, keep].mean(1)


def layer_probes(states_train: np.ndarray, y_train, states_test: np.ndarray, y_test, C: float = 1.0,
                 seed: int = 0) -> np.ndarray:
    """Top-1 on test of one linear probe per layer (``states`` (L+1, N, width); standardised features, scikit-learn's
    logistic regression), as Dyslexify's per-layer probes for the object and for the written word."""
    from .probes import probe_top1

    return np.array([probe_top1(a, y_train, b, y_test, C=C, standardize=True, seed=seed)
                     for a, b in zip(states_train, states_test)])


def top_reading_heads(score: np.ndarray, n: int = 5) -> list[dict]:
    """The ``n`` heads with the highest typographic attention score: [{layer, head, score}], highest first."""
    order = np.argsort(-score, axis=None)[:n]
    return [{"layer": int(i // score.shape[1]), "head": int(i % score.shape[1]), "score": float(score.flat[i])}
            for i in order]
