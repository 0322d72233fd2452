"""A linear map on CLIP embeddings with an SVD-controlled strength t.

Training (``train_linear_map``): a d x d map W on cached, normalised image embeddings f, initialised at the
identity, so that the policy

    pi_W(c | x) = softmax_c( s * cos(W f(x), T(c)) )

prefers y_w over y_l on the preference pairs (DPO against the identity map as reference,
``losses.po.dpo_loss``), keeps the predictions of other concepts (KL(pi_I || pi_W) on "keep" sets, e.g. object
classes of clean images) and stays near-orthogonal (mu * ||W^T W - I||_F^2).

Strength (``StrengthFamily``): with the SVD W = U S V^T, write W as a rotation times a stretch (the polar
decomposition): W = Q P with Q = U V^T (orthogonal) and P = V S V^T (symmetric positive definite). Then

    W_t = exp(t log Q) . V S^t V^T

- t = 0: exp(0) = I and S^0 = I, so W_0 = I: the original model's predictions, exactly;
- t = 1: exp(log Q) = Q and V S V^T = P, so W_1 = Q P = W: the trained map, exactly;
- t > 1 rotates further along the same one-parameter rotation group and stretches the same singular directions
  further (S^t); t < 0 applies the inverse rotation and the inverse stretch: W_{-1} = Q^-1 P^-1 (= W^-1 when Q
  and P commute);
- W_s W_t = W_{s+t} whenever Q and P commute (e.g. a pure rotation or a pure stretch), so t is an additive
  "amount of change"; in general the path is smooth in t and passes through I and W.
log Q is the real principal logarithm (Q is close to I when trained from the identity with the orthogonality
penalty; a Q with an eigenvalue -1 has no real logarithm and is reported). At t = 0 and t = 1 the family returns
I and W themselves, so the two anchor predictions are bitwise those of the original and the trained map.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..losses.po import dpo_loss, kl_ref_policy, preference_logratio


@dataclass(frozen=True)
class LinearMapConfig:
    beta: float = 1.0  # DPO beta
    lam: float = 1.0  # weight of the KL on each keep set
    mu: float = 1.0  # weight of ||W^T W - I||_F^2
    lr: float = 1e-2
    steps: int = 300
    batch_size: int = 256
    seed: int = 0


def _logp(feats: torch.Tensor, W: torch.Tensor | None, text: torch.Tensor, scale: float) -> torch.Tensor:
    f = feats if W is None else feats @ W.T
    return F.log_softmax(scale * F.normalize(f, dim=-1) @ text.T, dim=-1)


def train_linear_map(pref_feats: torch.Tensor, pref_text: torch.Tensor, y_w, y_l, scale: float,
                     keep: list[tuple[torch.Tensor, torch.Tensor]] = (), cfg: LinearMapConfig | None = None,
                     progress: bool = False) -> tuple[torch.Tensor, list[dict]]:
    """Train W (d x d, from the identity) with DPO on (pref_feats, y_w over y_l, among pref_text's classes), the
    KL to the identity map on each (feats, text) of ``keep`` and the near-orthogonality penalty. Returns W (float64)
    and the per-step log."""
    from tqdm.auto import tqdm

    cfg = cfg or LinearMapConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    pref_feats = pref_feats.double()
    pref_text = F.normalize(pref_text.double(), dim=-1)
    y_w, y_l = torch.as_tensor(np.asarray(y_w)), torch.as_tensor(np.asarray(y_l))
    keep = [(f.double(), F.normalize(t.double(), dim=-1)) for f, t in keep]
    with torch.no_grad():
        ref = _logp(pref_feats, None, pref_text, scale)
        keep_ref = [_logp(f, None, t, scale) for f, t in keep]
    d = pref_feats.shape[1]
    W = torch.eye(d, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([W], lr=cfg.lr)
    eye = torch.eye(d, dtype=torch.float64)
    log = []
    for step in tqdm(range(cfg.steps), disable=not progress, desc="linear map"):
        idx = torch.randint(len(pref_feats), (min(cfg.batch_size, len(pref_feats)),), generator=g)
        lp = _logp(pref_feats[idx], W, pref_text, scale)
        h = preference_logratio(lp, ref[idx], y_w[idx], y_l[idx])
        loss_pref = dpo_loss(h, cfg.beta)
        kl = torch.zeros((), dtype=torch.float64)
        for (f, t), r in zip(keep, keep_ref):
            j = torch.randint(len(f), (min(cfg.batch_size, len(f)),), generator=g)
            kl = kl + kl_ref_policy(r[j], _logp(f[j], W, t, scale))
        ortho = ((W.T @ W - eye) ** 2).sum()
        loss = loss_pref + cfg.lam * kl + cfg.mu * ortho
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append({"step": step + 1, "loss": float(loss.detach()), "pref": float(loss_pref.detach()),
                    "kl": float(kl.detach()), "ortho": float(ortho.detach()),
                    "pref_acc": float((h.detach() > 0).double().mean())})
    return W.detach(), log


class StrengthFamily:
    """W_t = exp(t log(U V^T)) . V S^t V^T from the SVD of W (see the module docstring)."""

    def __init__(self, W):
        from scipy.linalg import logm

        self.W = np.asarray(W.detach().cpu() if isinstance(W, torch.Tensor) else W, dtype=np.float64)
        if self.W.ndim != 2 or self.W.shape[0] != self.W.shape[1]:
            raise ValueError(f"W must be square, got shape {self.W.shape}")
        U, S, Vt = np.linalg.svd(self.W)
        if S.min() <= 1e-12:
            raise ValueError("W is singular: the strength family needs an invertible map")
        self.U, self.S, self.V = U, S, Vt.T
        Q = U @ Vt
        if np.linalg.det(Q) < 0:
            raise ValueError("the rotation part of W has determinant -1 (a reflection): it has no real logarithm; "
                             "train from the identity with a larger orthogonality weight mu")
        L = logm(Q)
        if np.iscomplexobj(L):
            if np.abs(L.imag).max() > 1e-8:
                raise ValueError("the rotation part of W has an eigenvalue -1: no real principal logarithm")
            L = L.real
        self.log_Q = (L - L.T) / 2  # the logarithm of a rotation is skew-symmetric; remove round-off

    def at(self, t: float) -> np.ndarray:
        from scipy.linalg import expm

        if t == 0:
            return np.eye(len(self.W))
        if t == 1:
            return self.W.copy()
        return expm(t * self.log_Q) @ (self.V * self.S ** t) @ self.V.T


def steer(feats: torch.Tensor, W_t) -> torch.Tensor:
    """Apply W_t to (n, d) embeddings and renormalise; the identity returns ``feats`` itself (t = 0 is the
    original model, bit for bit)."""
    W_t = torch.as_tensor(np.asarray(W_t), dtype=torch.float64)
    if torch.equal(W_t, torch.eye(len(W_t), dtype=torch.float64)):
        return feats
    return F.normalize(feats.double() @ W_t.T, dim=-1).to(feats.dtype)
