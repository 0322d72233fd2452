"""GCA experiments on the embedded world (notebook 05; Chen et al., NeurIPS 2024): small encoders trained with INCE,
RINCE, GCA-INCE, GCA-RINCE and GCA-UOT, SimCLR-style (two augmented views of an object image) or CLIP-style (image
and caption), under clean or noisy positives, then measured with a frozen-feature linear probe, zero-shot accuracy
(CLIP), alignment and uniformity (Wang & Isola 2020) and time per epoch.

Data: the world's ``object`` images (16 classes, 6 background styles: the *domain* label used by the domain-aware
target plan), downsampled to ``image_size``; training images from the world's ``train`` split, probe-test images
from ``test``. Noisy positives (``noise_share``): a fixed, seeded share of the training images gets a wrong
partner for the whole run: SimCLR pairs the first view with a view of another image, CLIP gets another image's
caption (a derangement of that share). The linear probe fits scikit-learn's logistic regression on the frozen
backbone features (before the projection head, as in SimCLR) of un-augmented training images.

Each run is a pure function of its GCAConfig (seeded data subset, initialisation, augmentations, order) and of the
precision ``precision="auto"`` resolves to on its machine; results are cached as JSON by the hash of both, so a
re-run of the notebook resumes where it stopped and a run computed in another precision is never read back.

Precision (``clipwb.precision``, issue 28): ``auto`` is the machine's choice for conv towers (its micro-benchmark of a
small conv tower, cached in ``precision.json``): bf16 autocast + channels-last on CPUs with native bf16, where that
tower runs 2.6x faster, else fp32 (channels-last where measured faster). The encoder's own per-model measurement is
not used: at its size (6-9 ms a batch of 16) it is noise, and it chose fp32 channels-last in one run and bf16 in
another on the same Xeon. The loss (Sinkhorn included), the caption encoder, the optimiser state and every
evaluation stay fp32. Measured on the 2-core Xeon (native bf16), one SimCLR step at batch 128, one thread, side by
side: fp32 133 ms, fp32 channels-last 102 ms, bf16 71 ms. ``precision="fp32"`` gives the contiguous fp32 runs of
before.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import profiles
from ..config import with_overrides
from ..losses.ot import GCA_METHODS, clip_gca_loss, gca_loss, target_plan, two_view_logits
from ..theory.mmcl import derangement_of
from ..training.schedule import warmup_cosine
from ..cache import cached_json
from .summary import seed_summary

METHODS = GCA_METHODS


@dataclass(frozen=True)
class GCAConfig:
    task: str = "simclr"  # "simclr" (two views) or "clip" (image-caption)
    method: str = "ince"
    n_train: int = 2048
    n_test: int = 1024
    image_size: int = 32
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    width: int = 16  # backbone channels: width, 2 width, 4 width, 4 width
    embed_dim: int = 64
    eps: float = 0.5  # temperature of s = cos / eps (the reference's 0.5)
    n_iters: int = 10  # Sinkhorn iterations of the GCA methods (the reference's 10)
    rho: float = 0.2  # GCA-UOT marginal relaxation
    # RINCE-family parameters: the authors' defaults (config/simclr_cifar10.yaml: q 0.98, lam 0.01, r1 1, r2 0.02)
    q: float = 0.98
    lam: float = 0.01
    r1: float = 1.0
    r2: float = 0.02
    uot_ce: str = "rows"  # GCA-UOT cross-entropy on renormalised rows ("rows") or the raw plan ("plan")
    uot_form: str = "paper"  # GCA-UOT as the paper's formula ("paper") or as the authors' code ("reference")
    noise_share: float = 0.0
    # domain/label-aware target plan (SimCLR task): alpha on same-group pairs, beta across; group "domain" is the
    # background style, "label" the object class
    alpha: float = 0.0
    beta: float = 0.0
    group: str = "domain"
    seed: int = 0
    world_seed: int = 0
    # image-encoder training: "auto" (channels-last / bf16 where measured faster on this machine), "fp32", "bf16"
    precision: str = "auto"

    def __post_init__(self):
        from ..precision import check_precision

        check_precision(self.precision)
        if self.task not in ("simclr", "clip"):
            raise ValueError(f"task must be 'simclr' or 'clip', got {self.task!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {METHODS}")
        if not 0 <= self.noise_share < 1:
            raise ValueError(f"noise_share must lie in [0, 1), got {self.noise_share}")
        if self.group not in ("domain", "label"):
            raise ValueError(f"group must be 'domain' or 'label', got {self.group!r}")
        if (self.alpha or self.beta) and self.task != "simclr":
            raise ValueError("the alpha/beta target plan is implemented for the simclr task")


def gca_config(profile: str = "full", **overrides) -> GCAConfig:
    return with_overrides(GCAConfig(), {**profiles.profile("gca", profile), **overrides})


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class ObjectData:
    x_train: torch.Tensor  # (n, 3, s, s) float in [0, 1]
    y_train: np.ndarray
    d_train: np.ndarray  # domain = background style index
    captions_train: list[str]
    x_test: torch.Tensor
    y_test: np.ndarray
    d_test: np.ndarray
    captions_test: list[str]
    class_names: tuple[str, ...]
    domain_names: tuple[str, ...]


def load_object_data(n_train: int, n_test: int, image_size: int = 32, world_seed: int = 0,
                     progress: bool = False) -> ObjectData:
    """World ``object`` images (train split for training, test split for the probe's test set)."""
    from ..world import World, WorldConfig
    from ..world.generator import BACKGROUNDS
    from ..world.shapes import OBJECT_CLASSES

    world = World(WorldConfig(seed=world_seed))

    def part(n, split):
        b = world.generate(n, split, "object", progress=progress, workers=2)
        x = torch.from_numpy(b.images).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        return x.contiguous(), b.labels("class_name", OBJECT_CLASSES), b.labels("background", BACKGROUNDS), \
            b.column("caption")

    xtr, ytr, dtr, ctr = part(n_train, "train")
    xte, yte, dte, cte = part(n_test, "test")
    return ObjectData(xtr, ytr, dtr, ctr, xte, yte, dte, cte, tuple(OBJECT_CLASSES), tuple(BACKGROUNDS))


_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def augment(x: torch.Tensor, gen: torch.Generator, min_scale: float = 0.5, hue: float = 1.0) -> torch.Tensor:
    """SimCLR-style views, batched and seeded: random resized crop (scale ``min_scale``-1, aspect 3/4-4/3) with a
    horizontal flip, colour jitter (brightness, contrast, saturation 0.4; hue rotation up to ``hue`` x 180
    degrees) and random grayscale (p = 0.2)."""
    n = len(x)
    r = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    scale = min_scale + (1 - min_scale) * r(n)
    aspect = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * r(n))
    sx, sy = (scale * aspect).sqrt().clamp(max=1), (scale / aspect).sqrt().clamp(max=1)
    tx, ty = (1 - sx) * (2 * r(n) - 1), (1 - sy) * (2 * r(n) - 1)
    flip = torch.where(r(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    b, c, s = (0.6 + 0.8 * r(n, 1, 1, 1) for _ in range(3))
    v = v * b
    m = v.mean(dim=(1, 2, 3), keepdim=True)
    v = (v - m) * c + m
    g = v.mean(dim=1, keepdim=True)
    v = (v - g) * s + g
    # hue: rotate the chroma plane of YIQ by a random angle (the world's colours are a nuisance for its shape
    # classes, so the full circle: colour alone cannot tell two images apart)
    ang = (2 * r(n) - 1) * math.pi * hue
    yiq = torch.einsum("ij,njhw->nihw", _RGB2YIQ, v)
    cos, sin = ang.cos().view(n, 1, 1), ang.sin().view(n, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    v = torch.einsum("ij,njhw->nihw", _YIQ2RGB, yiq)
    gray = r(n, 1, 1, 1) < 0.2
    v = torch.where(gray, v.mean(dim=1, keepdim=True).expand_as(v), v)
    return v.clamp(0, 1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - _MEAN) / 0.25


# -- models -----------------------------------------------------------------------------------------------------
class SmallConvNet(nn.Module):
    """Four conv-BN-ReLU stages (stride 2 from the second), global average pooling: a ResNet-free small backbone
    for 32 px images; ``features`` (4 width) feed the linear probe, ``head`` (an MLP) the contrastive loss."""

    def __init__(self, width: int = 32, embed_dim: int = 64):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 * width, 4 * width), nn.ReLU(inplace=True),
                                  nn.Linear(4 * width, embed_dim))

    def features(self, x):
        return self.backbone(_normalise(x))

    def forward(self, x):
        return self.head(self.features(x))


class BagOfWordsText(nn.Module):
    """Caption encoder: mean of token embeddings (open_clip's tokenizer, padding excluded), then an MLP."""

    def __init__(self, vocab_size: int, width: int = 64, embed_dim: int = 64):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, embed_dim))

    def forward(self, tokens):
        mask = (tokens > 0).float().unsqueeze(-1)
        h = (self.emb(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.mlp(h)


def _tokenize(texts):
    import open_clip

    from ..models import register_configs

    register_configs()
    return open_clip.get_tokenizer("clipwb-tiny")(list(texts))


# -- losses -----------------------------------------------------------------------------------------------------
def batch_loss(cfg: GCAConfig, z1: torch.Tensor, z2: torch.Tensor, groups: torch.Tensor | None = None):
    """The configured loss on a batch: two views (SimCLR, 2N x 2N, self-pairs masked) or image-text (CLIP, N x N,
    symmetric)."""
    kw = dict(method=cfg.method, n_iters=cfg.n_iters, eps=cfg.eps, rho=cfg.rho, q=cfg.q, lam=cfg.lam, r1=cfg.r1,
              r2=cfg.r2, uot_ce=cfg.uot_ce, uot_form=cfg.uot_form)
    if cfg.task == "clip":
        return clip_gca_loss(z1, z2, **kw)
    s, pos = two_view_logits(z1, z2, eps=cfg.eps)
    tgt = None
    if (cfg.alpha or cfg.beta) and groups is not None:
        tgt = target_plan(pos, torch.cat([groups, groups]), alpha=cfg.alpha, beta=cfg.beta)
    return gca_loss(s, pos, target=tgt, **kw)


# -- metrics ----------------------------------------------------------------------------------------------------
def alignment_uniformity(za: torch.Tensor, zb: torch.Tensor, t: float = 2.0) -> tuple[float, float]:
    """Wang & Isola (2020): alignment E||f(x) - f(x+)||^2 over positive pairs and uniformity
    log E exp(-t ||f(x) - f(y)||^2) over distinct pairs (of ``za``), on L2-normalised embeddings."""
    za, zb = F.normalize(za.double(), dim=-1), F.normalize(zb.double(), dim=-1)
    align = (za - zb).pow(2).sum(-1).mean().item()
    d2 = torch.pdist(za).pow(2)
    unif = torch.logsumexp(-t * d2, 0).item() - math.log(len(d2))
    return align, unif


def linear_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                 seed: int = 0) -> float:
    """Top-1 of the workbench's linear probe (``evaluation.probes``) on standardised frozen features."""
    from ..evaluation.probes import fit_probe

    clf = fit_probe(f_train, y_train, C=0.5, max_iter=2000, standardize=True, seed=seed)
    return float((clf.predict(f_test) == y_test).mean())


@torch.no_grad()
def _encode(fn, x, bs=512):
    return torch.cat([fn(x[i:i + bs]) for i in range(0, len(x), bs)])


# -- training ---------------------------------------------------------------------------------------------------
def gca_precision(cfg: GCAConfig):
    """The precision ``cfg``'s image encoder trains in on this machine: ``precision.resolve_precision`` on the CPU,
    the machine's conv-tower choice (measured once, cached in the clipwb cache; see the module docstring)."""
    from ..precision import resolve_precision

    return resolve_precision(cfg.precision, "cpu")


def _noisy_partner(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """partner[i] = i except on a seeded share of indices, which are deranged among themselves."""
    partner = np.arange(n)
    k = int(round(share * n))
    if k >= 2:
        idx = rng.choice(n, size=k, replace=False)
        partner[idx] = derangement_of(idx)  # a cyclic shift: no index keeps its own partner
    return partner


def train_gca(cfg: GCAConfig, data: ObjectData | None = None, progress: bool = True) -> dict:
    """Train one encoder (pair) with ``cfg`` and measure it; returns a JSON-ready dict."""
    from ..progress import tqdm

    data = data or load_object_data(cfg.n_train, cfg.n_test, cfg.image_size, cfg.world_seed)
    if len(data.x_train) < cfg.n_train or len(data.x_test) < cfg.n_test:
        raise ValueError(f"data holds {len(data.x_train)}/{len(data.x_test)} images, the config asks for "
                         f"{cfg.n_train}/{cfg.n_test}: load it with load_object_data(n_train, n_test)")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x, y, d = data.x_train[:cfg.n_train], data.y_train[:cfg.n_train], data.d_train[:cfg.n_train]
    groups = torch.from_numpy(d if cfg.group == "domain" else y)
    partner = torch.from_numpy(_noisy_partner(cfg.n_train, cfg.noise_share, rng))
    model = SmallConvNet(cfg.width, cfg.embed_dim)
    prec = gca_precision(cfg)
    model = prec.layout(model)

    def encode(v):  # the image encoder under this machine's precision; the loss gets fp32 embeddings
        with prec.autocast_ctx("cpu"):
            return model(prec.layout(v)).float()

    params = list(model.parameters())
    if cfg.task == "clip":
        tokens = _tokenize(data.captions_train[:cfg.n_train])
        text = BagOfWordsText(49408, 64, cfg.embed_dim)
        params += list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = cfg.n_train // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    log = {"loss": [], "epoch_seconds": []}
    step = 0
    bar = tqdm(range(cfg.epochs), disable=not progress, desc=f"{cfg.task} {cfg.method}")
    for _ in bar:
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(cfg.n_train))
        model.train()
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, total, cfg.lr, cfg.warmup)
            if cfg.task == "simclr":
                z1 = encode(augment(x[idx], gen))
                z2 = encode(augment(x[partner[idx]], gen))
                loss = batch_loss(cfg, z1, z2, groups[idx])
            else:  # captions name colours: no hue rotation
                z1 = encode(augment(x[idx], gen, hue=0.0))
                z2 = text(tokens[partner[idx]])
                loss = batch_loss(cfg, z1, z2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log["loss"].append(loss.item())
            step += 1
        log["epoch_seconds"].append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{np.mean(log['loss'][-steps_per_epoch:]):.3f}")
    return {"config": dataclasses.asdict(cfg), "precision": prec.to_dict(),
            **evaluate_encoder(cfg, model, data, text if cfg.task == "clip" else None), **log,
            "epoch_seconds_mean": float(np.mean(log["epoch_seconds"])),
            "epoch_seconds_median": float(np.median(log["epoch_seconds"]))}


@torch.no_grad()
def evaluate_encoder(cfg: GCAConfig, model: SmallConvNet, data: ObjectData, text: nn.Module | None = None) -> dict:
    model.eval()
    x_tr, x_te = data.x_train[:cfg.n_train], data.x_test[:cfg.n_test]
    y_tr, y_te = data.y_train[:cfg.n_train], data.y_test[:cfg.n_test]
    f_tr, f_te = _encode(model.features, x_tr).numpy(), _encode(model.features, x_te).numpy()
    out = {"linear_probe_top1": linear_probe(f_tr, y_tr, f_te, y_te, cfg.seed),
           "domain_probe_top1": linear_probe(f_tr, data.d_train[:cfg.n_train], f_te, data.d_test[:cfg.n_test],
                                             cfg.seed)}
    gen = torch.Generator().manual_seed(10_000 + cfg.seed)
    za = _encode(model, augment(x_te, gen, hue=1.0 if text is None else 0.0))
    if text is None:
        zb = _encode(model, augment(x_te, gen))
    else:
        text.eval()
        # alignment of test images with their own (clean) captions
        zb = text(_tokenize(data.captions_test[:cfg.n_test]))
        prompts = _tokenize([f"a photo of a {c}." for c in data.class_names])
        zt = F.normalize(text(prompts), dim=-1)
        zi = F.normalize(_encode(model, x_te), dim=-1)
        out["zero_shot_top1"] = float(((zi @ zt.T).argmax(-1).numpy() == y_te).mean())
    out["alignment"], out["uniformity"] = alignment_uniformity(za, zb)
    return out


# -- grids with a per-run cache ---------------------------------------------------------------------------------
def run_cached(cfg: GCAConfig, data: ObjectData, cache_dir: str | Path | None, progress: bool = True) -> dict:
    """``train_gca`` through the run cache (``clipwb.cache``, under ``cache_dir``; None: no cache), keyed by
    the config (which fixes the data too) and the precision it resolves to here."""
    return cached_json("gca", [cfg, gca_precision(cfg).cache_key()], lambda: train_gca(cfg, data, progress), cache_dir,
                       enabled=cache_dir is not None)


SUMMARY_KEYS = ("linear_probe_top1", "domain_probe_top1", "zero_shot_top1", "alignment", "uniformity",
                "epoch_seconds_median")


def summarise(results: list[dict], by: tuple[str, ...] = ("task", "method", "noise_share")) -> list[dict]:
    """Mean and std over seeds of every metric, grouped by config fields ``by`` (``experiments.summary``)."""
    rows = []
    for key, n, stats in seed_summary(results, lambda r: tuple(r["config"][k] for k in by), SUMMARY_KEYS):
        rows.append({**dict(zip(by, key)), "seeds": n, **{m: {"mean": mu, "std": sd} for m, (mu, sd) in stats.items()}})
    return rows


# -- the notebook's experiments -----------------------------------------------------------------------------------


def method_grid(base: GCAConfig, data: ObjectData, methods=METHODS, noise_shares=(0.0, 0.3), seeds=(0, 1),
                cache_dir=None, progress: bool = True) -> list[dict]:
    """Every (method, noise share, seed) run of ``base``'s task (in parallel processes: ``clipwb.parallel``)."""
    cfgs = [with_overrides(base, method=m, noise_share=p, seed=s) for p in noise_shares for m in methods
            for s in seeds]
    return _runs(cfgs, data, cache_dir, progress, f"{base.task} grid")


def _runs(cfgs: list[GCAConfig], data: ObjectData, cache_dir, progress: bool, desc: str) -> list[dict]:
    from ..parallel import pmap

    for c in {c.precision: c for c in cfgs}.values():
        gca_precision(c)  # measured once here (cached), before the worker processes fork

    return pmap(lambda c: run_cached(c, data, cache_dir, progress=False), cfgs, progress=progress, desc=desc)


def ablation(base: GCAConfig, data: ObjectData, iters=(1, 3, 10), eps=(0.2, 0.5, 1.0), cache_dir=None,
             progress: bool = True) -> dict:
    """GCA-INCE over Sinkhorn iterations (0 = INCE) and over eps, one seed."""
    b = with_overrides(base, method="gca-ince")
    runs = [("iters", 0, with_overrides(base, method="ince"))] + [("iters", k, with_overrides(b, n_iters=k))
                                                                   for k in iters]
    runs += [("eps", e, with_overrides(b, eps=e)) for e in eps]
    out: dict = {"iters": [], "eps": []}
    results = _runs([c for _, _, c in runs], data, cache_dir, progress, "ablations")
    for (kind, val, _), res in zip(runs, results):
        out[kind].append({kind: val, **{k: v for k, v in res.items() if k in SUMMARY_KEYS}})
    return out


def domain_sweep(base: GCAConfig, data: ObjectData, diffs=(-0.5, -0.25, 0.0, 0.25, 0.5), cache_dir=None,
                 progress: bool = True) -> list[dict]:
    """GCA-INCE with the domain-aware target plan: alpha - beta = d (alpha = max(d, 0), beta = max(-d, 0)) on
    same-background vs cross-background pairs; class and domain linear-probe accuracy per d."""
    cfgs = [with_overrides(base, method="gca-ince", group="domain", alpha=max(d, 0.0), beta=max(-d, 0.0))
            for d in diffs]
    return [{"alpha_minus_beta": d, "alpha": c.alpha, "beta": c.beta,
             **{k: v for k, v in r.items() if k in SUMMARY_KEYS}}
            for d, c, r in zip(diffs, cfgs, _runs(cfgs, data, cache_dir, progress, "alpha - beta"))]


def by_setting(summary: list[dict]) -> dict:
    """``summarise`` rows as {method: {"clean" | "noisy": {metric: {mean, std}, "seeds": k}}}."""
    out: dict = {}
    for r in summary:
        setting = "clean" if r["noise_share"] == 0 else "noisy"
        out.setdefault(r["method"], {})[setting] = {**{k: v for k, v in r.items() if isinstance(v, dict)},
                                                    "seeds": r["seeds"]}
    return out


def flat_metrics(task: str, summary: list[dict]) -> dict:
    """Flat keys for the reports table: ``<task>_<method>_<clean|noisy>_<metric>`` (means over seeds)."""
    out = {}
    for r in summary:
        setting = "clean" if r["noise_share"] == 0 else "noisy"
        for k in ("linear_probe_top1", "zero_shot_top1", "epoch_seconds_median"):
            if k in r:
                out[f"{task}_{r['method']}_{setting}_{k.replace('_median', '')}"] = r[k]["mean"]
    return out


def pretrain_comparison(profile: str, steps: int, losses=("clip", "gca-uot"), cache_dir=None,
                        progress: bool = True) -> dict:
    """Pretrain the tiny CLIP of the embedded world with each loss of ``losses`` (``training.pretrain``: the CLIP
    loss or GCA-UOT) for ``steps`` steps on ``64 steps`` images (full profile; the quick profile's pretraining
    otherwise) and score each with the world's zero-shot suite on 256 ``val`` images of each kind. Each loss's
    result is stored in the run cache under its pretraining config (None: no cache)."""
    import open_clip

    from ..evaluation.zeroshot import world_zero_shot_suite
    from ..training.pretrain import pretrain, pretrain_config
    from ..world import World

    out = {}
    for loss in losses:
        kw = dict(steps=steps, loss=loss, eval_every=0) if profile == "full" else dict(loss=loss)
        if profile == "full":
            kw.update(n_images=steps * 64, warmup=30, early_steps=steps // 4)
        pcfg = pretrain_config(profile, **kw)

        def run(pcfg=pcfg):
            model, log = pretrain(pcfg, progress=progress)
            ev = world_zero_shot_suite(model, open_clip.get_tokenizer(pcfg.model_name), World(pcfg.world), n=256,
                                       split="val")
            return {"steps": pcfg.steps, "train_seconds": log["train_seconds"], "final_loss": log["loss"][-1], **ev}

        out[loss] = cached_json("pretrain-comparison", [pcfg], run, cache_dir, enabled=cache_dir is not None)
    return out


def versus_baseline(results: list[dict], metric: str = "linear_probe_top1", baseline: str = "ince") -> list[dict]:
    """Each method against ``baseline`` on the same task, noise share and seed (same data, same initialisation
    seed): the mean paired difference of ``metric`` over seeds, its t-interval (``evaluation.stats.seed_summary``)
    and whether the interval excludes 0 (``significant``); with few seeds the interval is wide (two: t = 12.7, three:
    t = 4.3)."""
    from ..evaluation.stats import seed_summary

    by = {}
    for r in results:
        c = r["config"]
        if metric in r:
            by[(c["task"], c["noise_share"], c["method"], c["seed"])] = r[metric]
    rows = []
    for task, share, method in sorted({k[:3] for k in by if k[2] != baseline}):
        seeds = sorted(s for (t, p, m, s) in by if (t, p, m) == (task, share, method)
                       and (task, share, baseline, s) in by)
        if not seeds:
            continue
        d = seed_summary([by[(task, share, method, s)] - by[(task, share, baseline, s)] for s in seeds])
        rows.append({"task": task, "noise_share": share, "method": method, "metric": metric, "seeds": seeds,
                     "diff": d["mean"], "diff_std": d["std"], "ci": d["ci"],
                     "significant": bool(d["ci"] is not None and not d["ci"][0] <= 0 <= d["ci"][1])})
    return rows
