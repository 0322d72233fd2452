"""Defense-Prefix (Azuma & Matsui, "Defense-Prefix for Preventing Typographic Attacks on CLIP", ICCV 2023
workshops; code: github.com/azuma164/Defense-Prefix): one learned token embedding [DP] inserted before the class
name of every prompt ("a photo of a [DP] {class}."), both towers frozen. The authors' training, kept here:

- the prompt is written with a placeholder word ("*") before the class name; the text tower's token embedding of
  that position is replaced by the learned vector (initialised N(0, 0.02^2));
- defence loss: cross-entropy of the attacked images against the [DP] class prompts at the model's logit scale;
- identity loss: KL( softmax(s x_clean . t_plain) || softmax(s x_clean . t_DP) ) (batch mean) on the clean
  images, which keeps what the [DP] prompts say about clean images where the plain prompts had it;
- loss = defence + gamma * identity (gamma = 1), SGD with cosine annealing to 5e-5, one random template per step.

The injection is a forward hook on the text tower's ``nn.Embedding``: it works for open_clip's CLIP and for its
custom-text models with a token embedding (the tiny model, ViT-B-32, ...)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..evaluation.classifier import ZeroShotClassifier
from ..evaluation.zeroshot import OBJECT_TEMPLATES, class_text_features, template_mean

PLACEHOLDER = "*"


@dataclass(frozen=True)
class PrefixConfig:
    """Defaults: the authors' (SGD lr 0.002, cosine to 5e-5, 512 images per step, 10 epochs, gamma 1)."""
    lr: float = 0.002
    lr_min: float = 5e-5
    batch_size: int = 512
    epochs: int = 10
    gamma: float = 1.0  # weight of the identity loss
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.lr_min < 0:
            raise ValueError(f"lr must be > 0 and lr_min >= 0, got {self.lr}, {self.lr_min}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")


def token_embedding(model) -> nn.Embedding:
    """The text tower's token embedding (open_clip CLIP: ``model.token_embedding``; custom-text models:
    ``model.text.token_embedding``)."""
    for owner in (model, getattr(model, "text", None)):
        emb = getattr(owner, "token_embedding", None) if owner is not None else None
        if isinstance(emb, nn.Embedding):
            return emb
    raise TypeError(f"{type(model).__name__} has no text-tower token embedding (nn.Embedding) to insert a "
                    f"Defense-Prefix into: use an open_clip CLIP or custom-text CLIP with a token embedding")


def placeholder_id(tokenizer) -> int:
    ids = tokenizer([PLACEHOLDER])[0]
    return int(ids[1])  # [start-of-text, "*", end-of-text, 0, ...]


class _Inject:
    """Context manager: while active, the token embedding returns ``vector`` wherever the input is the
    placeholder id."""

    def __init__(self, model, pid: int, vector: torch.Tensor):
        self.emb, self.pid, self.vector = token_embedding(model), pid, vector

    def __enter__(self):
        def hook(_mod, inp, out):
            mask = (inp[0] == self.pid).unsqueeze(-1)
            return torch.where(mask, self.vector.to(out.dtype).expand_as(out), out)

        self.handle = self.emb.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def prefixed_prompts(classes, templates) -> list[str]:
    """Class-major prompts with the placeholder before each class name: "a photo of a * cat."."""
    return [t.format(f"{PLACEHOLDER} {c}") for c in classes for t in templates]


def prefix_text_features(model, tokenizer, classes, vector: torch.Tensor, templates=OBJECT_TEMPLATES) -> torch.Tensor:
    """(C, d) normalised class embeddings of the [DP] prompts (template mean as ``class_text_features``);
    differentiable in ``vector``."""
    device = next(model.parameters()).device
    tok = tokenizer(prefixed_prompts(classes, templates)).to(device)
    with _Inject(model, placeholder_id(tokenizer), vector):
        return template_mean(model.encode_text(tok), len(classes))


@dataclass
class PrefixResult:
    vector: torch.Tensor  # the learned [DP] token embedding (width,)
    log: list[dict]
    train_seconds: float

    def classifier(self, model, tokenizer, classes, templates=OBJECT_TEMPLATES) -> ZeroShotClassifier:
        """The model's zero-shot classifier with [DP] class prompts (images and logit scale unchanged)."""
        from ..models.inputs import encode_images

        with torch.no_grad():
            text = prefix_text_features(model, tokenizer, classes, self.vector, templates)
            scale = model.logit_scale.exp().float()
        return ZeroShotClassifier(lambda x: encode_images(model, x), text, scale)


def train_prefix(model, tokenizer, classes, clean_feats: torch.Tensor, typo_feats: torch.Tensor, labels,
                 cfg: PrefixConfig | None = None, templates=OBJECT_TEMPLATES, progress: bool = False) -> PrefixResult:
    """Learn the [DP] vector on pairs of (clean, attacked) image features (normalised, from the frozen image tower:
    ``models.inputs.encode_images``) with their true class ``labels``. ``model`` is not modified."""
    from ..progress import tqdm

    cfg = cfg or PrefixConfig()
    clean_feats, typo_feats = clean_feats.float(), typo_feats.float()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = len(y)
    if not n or len(clean_feats) != n or len(typo_feats) != n:
        raise ValueError(f"need as many clean and attacked features as labels, got {len(clean_feats)}, "
                         f"{len(typo_feats)} and {n}")
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    emb = token_embedding(model)
    g = torch.Generator().manual_seed(cfg.seed)
    vector = (cfg.init_std * torch.randn(emb.weight.shape[1], generator=g)).to(emb.weight.device).requires_grad_(True)
    pid = placeholder_id(tokenizer)
    scale = model.logit_scale.exp().float().detach()
    device = emb.weight.device
    steps_per_epoch = max(1, n // cfg.batch_size)  # drop_last, as the PO trainer
    opt = torch.optim.SGD([vector], lr=cfg.lr)
    plain = {t: class_text_features(model, tokenizer, classes, (t,)).detach() for t in templates}
    toks = {t: tokenizer(prefixed_prompts(classes, (t,))).to(device) for t in templates}
    log, t0 = [], time.time()
    step = 0
    for epoch in range(cfg.epochs):
        # the authors anneal once per epoch (CosineAnnealingLR(T_max = epochs), stepped after each epoch)
        lr = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for group in opt.param_groups:
            group["lr"] = lr
        order = torch.randperm(n, generator=g)
        for i in tqdm(range(steps_per_epoch), disable=not progress, desc=f"defense-prefix {epoch + 1}"):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            t = templates[int(torch.randint(len(templates), (1,), generator=g))]
            with _Inject(model, pid, vector):
                text_dp = F.normalize(model.encode_text(toks[t]).float(), dim=-1)
            xc, xt = clean_feats[idx].to(device), typo_feats[idx].to(device)
            defence = F.cross_entropy(scale * xt @ text_dp.T, y[idx].to(device))
            identity = F.kl_div(F.log_softmax(scale * xc @ text_dp.T, dim=-1),
                                F.softmax(scale * xc @ plain[t].T, dim=-1), reduction="batchmean")
            loss = defence + cfg.gamma * identity
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            log.append({"step": step, "epoch": epoch, "lr": lr, "loss": float(loss.detach()),
                        "defence": float(defence.detach()), "identity": float(identity.detach())})
    model.train(was_training)
    for p, f in zip(model.parameters(), flags):
        p.requires_grad_(f)
    return PrefixResult(vector.detach(), log, time.time() - t0)
