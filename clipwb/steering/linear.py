"""A linear map on CLIP embeddings with an SVD-controlled strength t.

Training (``train_linear_map``): a d x d map W on cached, normalised image embeddings f, initialised at the
identity, so that the policy

    pi_W(c | x) = softmax_c( s * cos(W f(x), T(c)) )

prefers y_w over y_l on the preference pairs (DPO against the identity map as reference,
``losses.po.dpo_loss``), keeps the predictions of other concepts (KL(pi_I || pi_W) on "keep" sets, e.g. object
classes of clean images), stays near-orthogonal (mu * ||W^T W - I||_F^2) and near the identity
(nu * ||W - I||_F^2).

Strength (``StrengthFamily``): from the SVD W = U S V^T write W as a proper rotation times a symmetric stretch,
W = Q P with Q = U' V^T (det Q = +1) and P = V diag(sigma) V^T, where U' = U and sigma = S, except that every
singular pair pointing in opposite directions (u_j . v_j < 0: a map trained to *reverse* a concept flips that
concept's direction) carries a minus sign, u_j -> -u_j and sigma_j -> -sigma_j (plus, if needed to keep
det Q = +1, the least aligned remaining pair). A symmetric W is decomposed by its eigenvectors: Q = I and sigma =
its eigenvalues, so W_t = I + t (W - I) exactly. Then

    W_t = exp(t log Q) . V diag(1 + t (sigma - 1)) V^T

- t = 0: exp(0) = I and diag(1) = I, so W_0 = I: the original model's predictions, exactly;
- t = 1: exp(log Q) = Q and V diag(sigma) V^T = P, so W_1 = Q P = W: the trained map, exactly;
- t > 1 rotates further along the same one-parameter rotation group and moves every stretch factor further
  from 1 in the learned direction; t < 0 rotates back and moves the stretch factors the other way (a direction
  the map shrank is amplified: the learned change is reversed);
- a flipped direction (sigma < 0) passes through 0 at t = 1 / (1 - sigma), e.g. t = 1/2 for sigma = -1: the
  concept is projected out there, the neutral point between the original (t = 0) and the reversed (t = 1)
  reading. This is why the stretch is interpolated linearly and not as sigma^t, which has no real value for
  sigma < 0.
log Q is the real principal logarithm of a proper rotation (Q is close to I when W is trained from the identity
with the orthogonality penalty); a Q with an eigenvalue -1 has no real principal logarithm and is reported. At
t = 0 and t = 1 the family returns I and W themselves, so the two anchor predictions are bitwise those of the
original and the trained map.
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
    # weight of ||W - I||_F^2: keeps the learned change small, so that the rotations of W_t stay small and the
    # path from I to W is nearly straight (without it, rotations in directions the losses do not see grow freely)
    nu: float = 0.1
    rank: int | None = None  # W = I + A B^T of this rank (None: a full d x d map)
    # W = I + (M + M^T) / 2: a pure stretch (no rotation), so that W_t = I + t (W - I) moves every concept
    # direction linearly in t; a reversed concept then passes through 0 exactly once
    symmetric: bool = False
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
    KL to the identity map on each (feats, text[, weight]) of ``keep`` and the near-orthogonality penalty. Returns W (float64)
    and the per-step log."""
    from ..progress import tqdm

    cfg = cfg or LinearMapConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    pref_feats = pref_feats.double()
    pref_text = F.normalize(pref_text.double(), dim=-1)
    y_w, y_l = torch.as_tensor(np.asarray(y_w)), torch.as_tensor(np.asarray(y_l))
    keep = [(k[0].double(), F.normalize(k[1].double(), dim=-1), k[2] if len(k) > 2 else 1.0) for k in keep]
    with torch.no_grad():
        ref = _logp(pref_feats, None, pref_text, scale)
        keep_ref = [_logp(f, None, t, scale) for f, t, _ in keep]
    d = pref_feats.shape[1]
    eye = torch.eye(d, dtype=torch.float64)
    if cfg.symmetric:
        M = torch.zeros(d, d, dtype=torch.float64, requires_grad=True)
        params = [M]
        make_W = lambda: eye + (M + M.T) / 2  # noqa: E731
    elif cfg.rank is None:
        W0 = torch.eye(d, dtype=torch.float64, requires_grad=True)
        params = [W0]
        make_W = lambda: W0  # noqa: E731
    else:  # a low-rank change: A random, B zero, so that W = I at the start and B gets a gradient at once
        A = (0.01 * torch.randn(d, cfg.rank, generator=g, dtype=torch.float64)).requires_grad_(True)
        B = torch.zeros(d, cfg.rank, dtype=torch.float64, requires_grad=True)
        params = [A, B]
        make_W = lambda: eye + A @ B.T  # noqa: E731
    opt = torch.optim.Adam(params, lr=cfg.lr)
    log = []
    for step in tqdm(range(cfg.steps), disable=not progress, desc="linear map"):
        W = make_W()
        idx = torch.randint(len(pref_feats), (min(cfg.batch_size, len(pref_feats)),), generator=g)
        lp = _logp(pref_feats[idx], W, pref_text, scale)
        h = preference_logratio(lp, ref[idx], y_w[idx], y_l[idx])
        loss_pref = dpo_loss(h, cfg.beta)
        kl = torch.zeros((), dtype=torch.float64)
        for (f, t, wk), r in zip(keep, keep_ref):
            j = torch.randint(len(f), (min(cfg.batch_size, len(f)),), generator=g)
            kl = kl + wk * kl_ref_policy(r[j], _logp(f[j], W, t, scale))
        ortho = ((W.T @ W - eye) ** 2).sum()
        loss = loss_pref + cfg.lam * kl + cfg.mu * ortho + cfg.nu * ((W - eye) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append({"step": step + 1, "loss": float(loss.detach()), "pref": float(loss_pref.detach()),
                    "kl": float(kl.detach()), "ortho": float(ortho.detach()),
                    "pref_acc": float((h.detach() > 0).double().mean())})
    return make_W().detach(), log


class StrengthFamily:
    """W_t = exp(t log Q) . V diag(1 + t (sigma - 1)) V^T from the SVD of W (see the module docstring)."""

    def __init__(self, W):
        from scipy.linalg import logm

        self.W = np.asarray(W.detach().cpu() if isinstance(W, torch.Tensor) else W, dtype=np.float64)
        if self.W.ndim != 2 or self.W.shape[0] != self.W.shape[1]:
            raise ValueError(f"W must be square, got shape {self.W.shape}")
        if not np.isfinite(self.W).all():
            raise ValueError("W has non-finite entries: lower the learning rate of the map")
        if np.allclose(self.W, self.W.T, atol=1e-10):  # a pure stretch: Q = I, sigma = the eigenvalues
            sigma, V = np.linalg.eigh((self.W + self.W.T) / 2)
            U, Vt = V, V.T
        else:
            U, S, Vt = np.linalg.svd(self.W)
            sigma = S.copy()
            # signed singular values: a pair (u_j, v_j) pointing in opposite directions is a flipped (reversed)
            # direction, not a rotation by ~pi: carry its sign on sigma_j (u_j -> -u_j, sigma_j -> -sigma_j)
            align = np.einsum("ij,ij->j", U, Vt.T)
            flip = align < 0
            if np.linalg.det(U @ Vt) * (-1) ** int(flip.sum()) < 0:  # keep det Q = +1: flip the least aligned other
                rest = np.where(~flip)[0]
                flip[rest[np.argmin(align[rest])]] = True
            U = U * np.where(flip, -1.0, 1.0)
            sigma = np.where(flip, -sigma, sigma)
        self.U, self.sigma, self.V = U, sigma, Vt.T
        Q = U @ Vt
        L = logm(Q)
        if np.iscomplexobj(L):
            if np.abs(L.imag).max() > 1e-8:
                raise ValueError("the rotation part of W has an eigenvalue -1: no real principal logarithm; "
                                 "train from the identity with a larger orthogonality weight mu")
            L = L.real
        self.log_Q = (L - L.T) / 2  # the logarithm of a rotation is skew-symmetric; remove round-off

    @property
    def reflects(self) -> bool:
        return bool((self.sigma < 0).any())

    def at(self, t: float) -> np.ndarray:
        from scipy.linalg import expm

        if t == 0:
            return np.eye(len(self.W))
        if t == 1:
            return self.W.copy()
        return expm(t * self.log_Q) @ (self.V * (1 + t * (self.sigma - 1))) @ self.V.T


def steer(feats: torch.Tensor, W_t) -> torch.Tensor:
    """Apply W_t to (n, d) embeddings and renormalise; the identity returns ``feats`` itself (t = 0 is the
    original model, bit for bit)."""
    W_t = torch.as_tensor(np.asarray(W_t), dtype=torch.float64)
    if torch.equal(W_t, torch.eye(len(W_t), dtype=torch.float64)):
        return feats
    return F.normalize(feats.double() @ W_t.T, dim=-1).to(feats.dtype)
