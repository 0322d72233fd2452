"""A learned projection that keeps visual concepts and drops written ones (Materzynska, Torralba & Bau,
"Disentangling visual and written concepts in CLIP", CVPR 2022: the "forget to spell" projection).

The paper learns a lower-dimensional linear projection W (d x k) of CLIP's joint space, applied to image and text
embeddings alike, with contrastive losses that pull together, in the projected space, a natural image, its class
text and the same image with a word written on it, plus an orthogonality regulariser on W. Our data are
classification sets, so the image-text terms are cross-entropies over the class prompts (several images of a
batch share a class) and the image-image term is a symmetric InfoNCE between each clean image and its attacked
version:

    L = CE(s P(x_clean) . P(T), y) + CE(s P(x_typo) . P(T), y) + InfoNCE_s(P(x_clean), P(x_typo))
        + mu ||W^T W - I_k||_F^2,      P(v) = normalise(v W),

with s the model's logit scale and T the class embeddings. W starts from k columns of a seeded random orthogonal
matrix; Adam."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.classifier import ZeroShotClassifier


@dataclass(frozen=True)
class ProjectionConfig:
    dim: int | None = None  # k; None: half the embedding width
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 3
    mu: float = 1.0  # weight of the orthogonality penalty
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim must be >= 1 (or None: half the embedding width), got {self.dim}")
        if not self.lr > 0 or self.mu < 0:
            raise ValueError(f"lr must be > 0 and mu >= 0, got {self.lr}, {self.mu}")


def project(feats: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return F.normalize(feats.float() @ W.float(), dim=-1)


@dataclass
class ProjectionResult:
    W: torch.Tensor  # (d, k)
    log: list[dict]
    train_seconds: float

    def classifier(self, base: ZeroShotClassifier) -> ZeroShotClassifier:
        """``base`` (the model's zero-shot classifier) seen through the projection: images and class embeddings
        projected and renormalised, the logit scale kept."""
        W = self.W
        return ZeroShotClassifier(lambda x: project(base.encode(x), W), project(base.text, W), base.scale)


def train_projection(clean_feats: torch.Tensor, typo_feats: torch.Tensor, labels, text: torch.Tensor,
                     scale: float, cfg: ProjectionConfig | None = None, progress: bool = False) -> ProjectionResult:
    """Learn W on (clean, attacked) feature pairs with true class ``labels`` and class embeddings ``text``."""
    from ..progress import tqdm

    cfg = cfg or ProjectionConfig()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n, d = clean_feats.shape
    if len(typo_feats) != n or len(y) != n:
        raise ValueError(f"need as many clean and attacked features as labels, got {n}, {len(typo_feats)}, {len(y)}")
    k = cfg.dim or d // 2
    if k > d:
        raise ValueError(f"dim {k} exceeds the embedding width {d}")
    g = torch.Generator().manual_seed(cfg.seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    W = q[:, :k].clone().requires_grad_(True)
    opt = torch.optim.Adam([W], lr=cfg.lr)
    xc_all, xt_all, T = clean_feats.float(), typo_feats.float(), text.float()
    eye = torch.eye(k)
    steps_per_epoch = max(1, n // cfg.batch_size)
    log, t0, step = [], time.time(), 0
    bar = tqdm(total=steps_per_epoch * cfg.epochs, disable=not progress, desc="projection")
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            pc, pt, pT = project(xc_all[idx], W), project(xt_all[idx], W), project(T, W)
            ce = F.cross_entropy(scale * pc @ pT.T, y[idx]) + F.cross_entropy(scale * pt @ pT.T, y[idx])
            sim = scale * pc @ pt.T
            target = torch.arange(len(idx))
            nce = 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))
            ortho = ((W.T @ W - eye) ** 2).sum()
            loss = ce + nce + cfg.mu * ortho
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            log.append({"step": step, "epoch": epoch, "loss": float(loss.detach()), "ce": float(ce.detach()),
                        "nce": float(nce.detach()), "ortho": float(ortho.detach())})
    bar.close()
    return ProjectionResult(W.detach(), log, time.time() - t0)
