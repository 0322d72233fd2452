"""Weight interpolation between a zero-shot and a fine-tuned model: PAINT (Ilharco et al., "Patching
open-vocabulary models by interpolating weights", NeurIPS 2022) and WiSE-FT (Wortsman et al., "Robust fine-tuning
of zero-shot models", CVPR 2022):

    theta(alpha) = (1 - alpha) theta_zero-shot + alpha theta_fine-tuned,

alpha = 0 the zero-shot model, alpha = 1 the fine-tuned one. PAINT picks alpha on held-out data of the patched and
the supported task; here ``select_strength`` does so on training-set images only (no test image chooses it)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


def interpolate(zero_shot: nn.Module, fine_tuned: nn.Module, alpha: float) -> nn.Module:
    """A new model with theta(alpha) for every floating-point parameter and buffer (computed in float64, stored
    in each tensor's dtype); other buffers come from the fine-tuned model. Neither argument is modified."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (0: zero-shot, 1: fine-tuned), got {alpha}")
    sd0, sd1 = zero_shot.state_dict(), fine_tuned.state_dict()
    if sd0.keys() != sd1.keys():
        diff = sorted(set(sd0) ^ set(sd1))[:5]
        raise ValueError(f"the two models differ in their parameters (e.g. {diff}): interpolate two checkpoints of "
                         f"the same architecture")
    new = {}
    for k, b in sd1.items():
        a = sd0[k]
        if a.shape != b.shape:
            raise ValueError(f"parameter {k} has shape {tuple(a.shape)} in the zero-shot model and {tuple(b.shape)} "
                             f"in the fine-tuned one: interpolate two checkpoints of the same architecture")
        if b.is_floating_point():
            new[k] = ((1.0 - alpha) * a.double() + alpha * b.double()).to(b.dtype)
        else:
            new[k] = b.clone()
    out = copy.deepcopy(fine_tuned)
    with torch.no_grad():
        out.load_state_dict(new)
    return out.eval()


def select_strength(rows: list[dict], clean_floor: float, key: str = "alpha") -> dict:
    """The row (``{key, "clean_top1", "typo_top1"}`` measured on training images) with the highest typographic
    top-1 among those whose clean top-1 is at least ``clean_floor``, the smallest strength on ties; the row of the
    smallest strength if none keeps the floor. Used for PAINT's alpha and the steering map's t."""
    ok = [r for r in rows if r["clean_top1"] >= clean_floor]
    if not ok:
        return min(rows, key=lambda r: r[key])
    return max(ok, key=lambda r: (r["typo_top1"], -r[key]))
