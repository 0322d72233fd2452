"""Preference-optimisation training of CLIP against typographic attacks (Afzali et al., ICLR 2025): DPO, IPO, KTO
and the cross-entropy baseline, in a plain loop.

One step, for a batch of B pairs (typographic image x', true class y_w, written class y_l, clean image x):
policy log-probs over the C class prompts for x' and x (one pass of the image tower over 2B images; B for CE),
the cached reference log-probs of the same images, ``losses.po.po_loss``, backward, Adamax, cosine schedule,
and the Beta(0.7, 0.7)-weighted model average (BMA) over all iterates including the initial weights.

What trains (``POConfig.train``):
- ``image`` (the paper): the image tower; the text tower and logit scale are frozen, so the class prompt
  features are computed once;
- ``all`` (the reference code): every parameter, prompts re-encoded every step;
- ``last_k``: the last ``last_k`` blocks of the image tower and its output projection;
- ``linear_head``: a d x d map on frozen image embeddings (identity at start), trained on cached features and
  folded into the image tower's output projection at the end, so the result is a plain open_clip model.

The reference log-probs are computed once per dataset (no augmentation), so a step costs one policy pass. The
policy runs in eval mode: BatchNorm statistics of ResNet towers stay those of pretraining, so pi_theta equals
pi_ref exactly at step 0 and data-parallel runs match a single process (no per-rank batch statistics).

Data parallel: under ``torchrun`` (``torch.distributed`` initialised) each process takes a contiguous slice of
every global batch, gradients are averaged by DistributedDataParallel, KTO's reference point z0 and the logged
stats are averaged across processes; the loss equals the single-process loss on the same global batch.

Checkpoints (every ``checkpoint_every`` steps, written atomically) hold the trainable parameters, the optimiser,
the BMA sums and the log; ``train_po(..., resume=True)`` continues from the last one and ends with the same
weights as an uninterrupted run (the data order is a function of (seed, epoch), nothing else is random).
"""
from __future__ import annotations

import copy
import dataclasses
import json
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
from ..evaluation.zeroshot import OBJECT_TEMPLATES, template_mean
from ..models.inputs import images_to_tensor
from ..fileio import atomic_write, atomic_write_text, check_writable_dir, clean_stale_temp_files
from ..losses.po import DEFAULT_BETA, KTO_Z0, METHODS, po_loss, policy_logprobs
from ..precision import Precision, check_precision, resolve_precision
from .schedule import warmup_cosine

TRAIN_MODES = ("image", "all", "last_k", "linear_head")


@dataclass(frozen=True)
class POConfig:
    """Defaults = the reference settings (Adamax lr 2e-5, cosine to 0, no warmup, 512 pairs, 3 epochs, seed 0,
    drop_last, BMA over all iterates). ``clipwb.profiles.PROFILES["po"]["embedded"]`` holds the tiny model's own settings."""
    method: str = "dpo"
    beta: float | None = None  # None: the method's reference value (DPO 1.0, IPO 0.01, KTO 1.5)
    lam: float = 1.0  # weight of KL(pi_ref || pi_theta) on clean images; the reference ran 1.0 (CE: unused)
    label_smoothing: float = 0.0  # conservative DPO
    reference_free: bool = False  # DPO without the reference log-ratio
    kto_z0: str = "exact"  # KTO's reference point: "exact" KL(pi_ref || pi_theta) on clean images, or "mismatched"
    train: str = "image"
    last_k: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    batch_size: int = 512  # pairs per step (global, over all processes)
    epochs: int = 3
    warmup: int = 0
    drop_last: bool = True
    seed: int = 0
    bma_alpha: float = 0.7  # Beta(a, a) weights of the model average
    templates: tuple[str, ...] = OBJECT_TEMPLATES
    checkpoint_every: int = 0  # steps; 0: no checkpoints
    device: str | None = None  # None: cuda if available, else cpu
    # "auto": bf16 autocast + channels-last where measured faster (CUDA; CPUs with native bf16), else fp32;
    # "bf16" / "fp32" force it (clipwb.precision)
    precision: str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"train must be one of {list(TRAIN_MODES)}, got {self.train!r}")
        for name in ("batch_size", "epochs", "last_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.beta is not None and not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta} (a negative beta trains toward the written word; "
                             f"IPO's target margin is 1/(2 beta))")
        for name in ("lam", "weight_decay", "warmup", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.bma_alpha > 0:
            raise ValueError(f"bma_alpha must be > 0, got {self.bma_alpha}")
        if not self.templates or not all(isinstance(t, str) and "{}" in t for t in self.templates):
            raise ValueError(f"templates must be a non-empty list of prompts with a '{{}}' for the class name, e.g. "
                             f"['a photo of a {{}}.'], got {list(self.templates)!r}")
        check_precision(self.precision)
        if self.kto_z0 not in KTO_Z0:
            raise ValueError(f"kto_z0 must be one of {list(KTO_Z0)}, got {self.kto_z0!r}")

    @property
    def beta_value(self) -> float:
        return DEFAULT_BETA[self.method] if self.beta is None else self.beta


def po_config(profile: str = "reference", **overrides) -> POConfig:
    """The profile's settings, its per-method settings for ``overrides["method"]``, then ``overrides``."""
    base = profiles.profile("po", profile)
    per = profiles.profile("po_methods", profile).get(overrides.get("method", POConfig.method), {})
    return with_overrides(POConfig(), {**base, **per, **overrides})


# -- distributed helpers ---------------------------------------------------------------------------------------
def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _all_mean(x: torch.Tensor) -> torch.Tensor:
    dist = _dist()
    if dist is None:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    dist = _dist()
    if torch.cuda.is_available():
        return torch.device("cuda", dist.get_rank() % torch.cuda.device_count() if dist else 0)
    return torch.device("cpu")


# -- schedule and averaging ----------------------------------------------------------------------------------
def lr_at(step: int, total: int, cfg: POConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): ``schedule.warmup_cosine``."""
    return warmup_cosine(step, total, cfg.lr, cfg.warmup)


def bma_weights(total: int, alpha: float = 0.7) -> np.ndarray:
    """w_k = BetaPDF_{alpha,alpha}((k + 0.5) / (T + 1)) for the iterates k = 0 (initial weights) .. T."""
    u = (np.arange(total + 1) + 0.5) / (total + 1)
    log_b = 2 * math.lgamma(alpha) - math.lgamma(2 * alpha)
    return np.exp((alpha - 1) * (np.log(u) + np.log1p(-u)) - log_b)


# -- what trains ---------------------------------------------------------------------------------------------
def _visual_blocks(visual: nn.Module) -> tuple[list[nn.Module], list]:
    """(ordered blocks, output parameters/modules) of an open_clip image tower."""
    if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):  # VisionTransformer
        return list(visual.transformer.resblocks), [visual.ln_post, visual.proj]
    if all(hasattr(visual, f"layer{i}") for i in range(1, 5)):  # ModifiedResNet
        return [visual.layer1, visual.layer2, visual.layer3, visual.layer4], [visual.attnpool]
    raise ValueError(f"last_k does not know the blocks of {type(visual).__name__}: use train='image' or 'all'")


def set_trainable(model: nn.Module, mode: str, last_k: int = 1) -> list[str]:
    """Set requires_grad for ``mode``; returns the names of the trainable parameters (linear_head: none of the
    model's)."""
    for p in model.parameters():
        p.requires_grad_(mode == "all")
    if mode == "image":
        for p in model.visual.parameters():
            p.requires_grad_(True)
    elif mode == "last_k":
        blocks, out = _visual_blocks(model.visual)
        if last_k > len(blocks):
            raise ValueError(f"last_k={last_k} but the image tower has {len(blocks)} blocks")
        for m in blocks[-last_k:] + out:
            for p in (m.parameters() if isinstance(m, nn.Module) else [m]):
                p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def fold_linear_head(model: nn.Module, W: torch.Tensor) -> nn.Module:
    """Fold a map f -> W f on the image embedding into the image tower's output projection (in place)."""
    v = model.visual
    with torch.no_grad():
        if getattr(v, "proj", None) is not None and isinstance(v.proj, torch.Tensor):  # ViT: x @ proj
            v.proj.copy_(v.proj @ W.T.to(v.proj))
        elif hasattr(v, "attnpool"):  # ModifiedResNet: attnpool.c_proj (Linear)
            lin = v.attnpool.c_proj
            lin.weight.copy_(W.to(lin.weight) @ lin.weight)
            if lin.bias is not None:
                lin.bias.copy_(W.to(lin.bias) @ lin.bias)
        else:
            raise ValueError(f"cannot fold a linear head into {type(v).__name__}")
    return model


class _Policy(nn.Module):
    """What one step differentiates: image features (through the tower, or a head on cached features) and, when
    the text tower trains, the class features."""

    def __init__(self, model: nn.Module, mode: str, dim: int):
        super().__init__()
        self.model, self.mode = model, mode
        self.head = nn.Linear(dim, dim, bias=False) if mode == "linear_head" else None
        if self.head is not None:
            nn.init.eye_(self.head.weight)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None):
        img = self.head(images) if self.head is not None else self.model.visual(images)
        txt = self.model.encode_text(tokens) if tokens is not None else None
        return img, txt


def class_features(model, tokens: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, d) class embeddings of class-major prompt tokens (differentiable; ``zeroshot.template_mean``)."""
    return template_mean(model.encode_text(tokens), n_classes)


def _logit_scale(model) -> torch.Tensor:
    return model.logit_scale.exp().float()


@torch.no_grad()
def _features(model, images: np.ndarray, batch: int, device, prec: Precision) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        x = images_to_tensor(images[i:i + batch], model)
        if prec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with prec.autocast_ctx(device):
            out.append(model.visual(x).float())
    return torch.cat(out)


@torch.no_grad()
def reference_logprobs(model, tokenizer, classes, images: np.ndarray, templates=OBJECT_TEMPLATES, batch: int = 512,
                       precision: Precision = Precision("fp32", "default")) -> torch.Tensor:
    """log pi_ref(c|x) for every image (n, C), computed once (the reference is frozen, the data not augmented)."""
    model.eval()
    device = next(model.parameters()).device
    tok = tokenizer([t.format(c) for c in classes for t in templates]).to(device)
    txt = class_features(model, tok, len(classes))
    feats = _features(model, images, batch, device, precision)
    return policy_logprobs(F.normalize(feats, dim=-1), txt, _logit_scale(model), normalized=True)


# -- the loop ------------------------------------------------------------------------------------------------
@dataclass
class POResult:
    model: nn.Module  # raw final weights
    avg_model: nn.Module  # BMA weights
    log: list[dict]
    train_seconds: float
    steps: int
    config: POConfig
    out_dir: Path | None = None
    precision: dict | None = None  # clipwb.precision.Precision.to_dict() of the run


def _fingerprint(model: nn.Module) -> list:
    return [sum(p.numel() for p in model.parameters()),
            round(float(sum(p.detach().double().sum() for p in model.parameters())), 4)]


def train_po(model: nn.Module, tokenizer, classes, data: dict, cfg: POConfig | None = None,
             out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
             save: bool = True, on_step=None, model_name: str = "clipwb-tiny") -> POResult:
    """Train ``model`` (a copy; the argument is not modified) on ``data`` = {"clean", "typo": uint8 (n, H, W, 3),
    "true", "written": int (n,)} (e.g. ``TypographicDataset.arrays()``) and return raw and averaged models.

    ``out_dir`` receives checkpoints (``checkpoint.pt``), the per-step log (``log.csv``, ``log.json``) and, with
    ``save``, the final models in open_clip's format (``raw/``, ``avg/``). ``on_step(step, stats)`` is called
    after every optimiser step (tests use it to interrupt a run). ``model_name`` is the open_clip config name
    written beside the saved weights (``LoadedModel.name``)."""
    from ..progress import tqdm

    cfg = cfg or POConfig()
    dist = _dist()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    device = resolve_device(cfg.device)
    on_cuda = device.type == "cuda"
    prec = resolve_precision(cfg.precision, device)
    cl = prec.channels_last
    classes = list(classes)
    n = len(data["typo"])
    if len(data["clean"]) != n or len(data["true"]) != n or len(data["written"]) != n:
        raise ValueError("data['clean'], ['typo'], ['true'], ['written'] must have the same length")
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world_size} processes")
    steps_per_epoch = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    if steps_per_epoch < 1:
        raise ValueError(f"{n} pairs do not fill one batch of {cfg.batch_size} with drop_last: lower batch_size")
    total = steps_per_epoch * cfg.epochs
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume needs out_dir (where the checkpoint is)")
    ckpt = out_dir / "checkpoint.pt" if out_dir is not None else None
    if out_dir is not None:
        check_writable_dir(out_dir, "out_dir")
        if rank == 0:
            clean_stale_temp_files(out_dir)
        if resume and not ckpt.is_file():
            raise ValueError(f"nothing to resume: no checkpoint at {ckpt} (a run writes one every checkpoint_every "
                             f"steps; checkpoint_every={cfg.checkpoint_every}); run without resume to start at step 0")
    run_id = run_identity(cfg, data)

    torch.manual_seed(cfg.seed)
    ref = copy.deepcopy(model).to(device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    policy_model = copy.deepcopy(model).to(device).eval()
    if cl:
        ref = ref.to(memory_format=torch.channels_last)
        policy_model = policy_model.to(memory_format=torch.channels_last)
    fingerprint = _fingerprint(policy_model)
    y_w = torch.as_tensor(np.asarray(data["true"]), device=device)
    y_l = torch.as_tensor(np.asarray(data["written"]), device=device)
    need_clean = cfg.method != "ce"

    t0 = time.time()
    ref_typo = reference_logprobs(ref, tokenizer, classes, data["typo"], cfg.templates, precision=prec)
    ref_clean = (reference_logprobs(ref, tokenizer, classes, data["clean"], cfg.templates, precision=prec)
                 if need_clean else None)
    tokens = tokenizer([t.format(c) for c in classes for t in cfg.templates]).to(device)
    with torch.no_grad():
        fixed_txt = class_features(ref, tokens, len(classes))
    scale = _logit_scale(ref)

    set_trainable(policy_model, "image" if cfg.train == "linear_head" else cfg.train, cfg.last_k)
    if cfg.train == "linear_head":
        for p in policy_model.parameters():
            p.requires_grad_(False)
        cached_typo = _features(ref, data["typo"], 512, device, prec)
        cached_clean = _features(ref, data["clean"], 512, device, prec) if need_clean else None
    policy = _Policy(policy_model, cfg.train, int(fixed_txt.shape[-1])).to(device)
    names = [nm for nm, p in policy.named_parameters() if p.requires_grad]
    params = [p for p in policy.parameters() if p.requires_grad]
    net = policy
    if dist:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(policy, device_ids=[device.index] if on_cuda else None)
    opt = torch.optim.Adamax(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    w = bma_weights(total, cfg.bma_alpha)
    bma_sum = {nm: p.detach().double() * w[0] for nm, p in zip(names, params)}
    bma_wsum = float(w[0])
    log: list[dict] = []
    start = 0
    if resume:
        state = load_checkpoint(ckpt, device)
        _check_same_run(ckpt, json.loads(state.get("run", "{}")), run_id)
        if state["fingerprint"] != fingerprint or state["names"] != names or state["total"] != total:
            raise ValueError(f"cannot resume from {ckpt}: it belongs to another model, data size or config; run "
                             f"without resume to start over, or pass another out_dir")
        with torch.no_grad():
            for nm, p in zip(names, params):
                p.copy_(state["params"][nm])
        opt.load_state_dict(state["optimizer"])
        bma_sum = {nm: t.to(device) for nm, t in state["bma_sum"].items()}
        bma_wsum, start, log = float(state["bma_wsum"]), int(state["step"]), list(state["log"])

    def save_checkpoint(step: int):
        if ckpt is None or rank != 0:
            return
        state = {"step": step, "total": total, "names": names, "fingerprint": fingerprint,
                 "params": {nm: p.detach().cpu() for nm, p in zip(names, params)},
                 "optimizer": opt.state_dict(), "bma_sum": {k: v.cpu() for k, v in bma_sum.items()},
                 "bma_wsum": bma_wsum, "log": log, "config": json.dumps(dataclasses.asdict(cfg), default=str),
                 "run": json.dumps(run_id), "precision": json.dumps(prec.to_dict())}
        atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
        _write_log(out_dir, log)

    per_rank = cfg.batch_size // world_size
    bar = tqdm(total=total, initial=start, disable=not progress or rank != 0, desc=f"{cfg.method} ({cfg.train})")
    for step in range(start, total):
        epoch, b = divmod(step, steps_per_epoch)
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
        idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        idx = idx[rank * per_rank:(rank + 1) * per_rank] if len(idx) == cfg.batch_size else \
            idx[rank::world_size]  # the ragged last batch (drop_last=False)
        idx_np = idx.numpy()
        idx = idx.to(device)
        lr = lr_at(step, total, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        if cfg.train == "linear_head":
            x = torch.cat([cached_typo[idx], cached_clean[idx]]) if need_clean else cached_typo[idx]
        else:
            imgs = np.concatenate([data["typo"][idx_np], data["clean"][idx_np]]) if need_clean else data["typo"][idx_np]
            x = images_to_tensor(imgs, policy_model)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
        with prec.autocast_ctx(device):
            img, txt = net(x, tokens if cfg.train == "all" else None)
        txt = template_mean(txt, len(classes)) if txt is not None else fixed_txt
        s = _logit_scale(policy_model) if cfg.train == "all" else scale
        logp = policy_logprobs(F.normalize(img.float(), dim=-1), txt, s, normalized=True)
        k = len(idx)
        loss, stats = po_loss(cfg.method, logp[:k], ref_typo[idx], y_w[idx], y_l[idx],
                              logp[k:] if need_clean else None, ref_clean[idx] if need_clean else None,
                              beta=cfg.beta_value, lam=cfg.lam, label_smoothing=cfg.label_smoothing,
                              reference_free=cfg.reference_free, kl_reduce=_all_mean if dist else None,
                              kto_z0=cfg.kto_z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for nm, p in zip(names, params):
                bma_sum[nm] += p.detach().double() * w[step + 1]
        bma_wsum += float(w[step + 1])
        stats["loss"] = float(loss.detach())
        if dist:
            vec = _all_mean(torch.tensor([stats[k_] for k_ in sorted(stats)], dtype=torch.float64, device=device))
            stats = dict(zip(sorted(stats), vec.tolist()))
        row = {"step": step + 1, "epoch": epoch, "lr": lr, **stats, "seconds": time.time() - t0}
        log.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.4f}", acc=f"{stats['pref_acc']:.2f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_checkpoint(step + 1)
        if on_step is not None:
            on_step(step + 1, row)
    bar.close()
    train_seconds = time.time() - t0

    raw = policy_model
    avg = copy.deepcopy(policy_model)
    avg_params = dict(avg.named_parameters()) if cfg.train != "linear_head" else None
    with torch.no_grad():
        if cfg.train == "linear_head":
            W_raw = policy.head.weight.detach().float()
            W_avg = (bma_sum["head.weight"] / bma_wsum).float()
            fold_linear_head(raw, W_raw)
            fold_linear_head(avg, W_avg)
        else:
            for nm in names:
                target = avg_params[nm.removeprefix("model.")]
                target.copy_((bma_sum[nm] / bma_wsum).to(target))
    for m in (raw, avg):
        m.to(memory_format=torch.contiguous_format)
        for p in m.parameters():
            p.requires_grad_(False)
        m.eval()
    if out_dir is not None and rank == 0:
        _write_log(out_dir, log)
        atomic_write_text(out_dir / "run.json", json.dumps(
            {"config": dataclasses.asdict(cfg), "run": run_id, "precision": prec.to_dict(), "steps": total,
             "train_seconds": train_seconds}, indent=1, default=str))
        if save:
            from ..models.loading import save_model

            save_model(raw, out_dir / "raw", model_name)
            save_model(avg, out_dir / "avg", model_name)
    return POResult(raw, avg, log, train_seconds, total, cfg, out_dir, prec.to_dict())


# -- run identity, checkpoints, output folders -------------------------------------------------------------------
# POConfig fields that do not change the weights (a resume may change them)
_NOT_IDENTITY = ("checkpoint_every", "device", "precision")


def data_fingerprint(data: dict) -> str:
    """A hash of the training arrays (images and labels): a resume on other data is refused."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for key in ("typo", "clean", "true", "written"):
        a = np.ascontiguousarray(np.asarray(data[key]))
        h.update(f"{key}{a.shape}{a.dtype}".encode())
        h.update(a.data)
    return h.hexdigest()


def run_identity(cfg: POConfig, data: dict) -> dict:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IDENTITY}
    d["templates"] = list(d["templates"])
    return {"config": d, "data": data_fingerprint(data)}


def _check_same_run(ckpt: Path, saved: dict, now: dict) -> None:
    if not saved:  # a checkpoint from before run identities were recorded: the fingerprint checks still apply
        return
    diff = [f"{k}={saved['config'].get(k)!r} -> {v!r}" for k, v in now["config"].items()
            if saved["config"].get(k) != v]
    if saved.get("data") != now["data"]:
        diff.append("the training data differ (images or labels)")
    if diff:
        raise ValueError(f"cannot resume from {ckpt}: it was written by a different run ({'; '.join(diff)}); "
                         f"run without resume to start over, or pass another out_dir")


def load_checkpoint(path: Path, device) -> dict:
    """torch.load(weights_only=True) with a clear error for a truncated or foreign file."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # zip/pickle errors of a truncated or non-checkpoint file
        raise ValueError(f"cannot read the checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]}): "
                         f"it is truncated or not a clipwb PO checkpoint; delete it and run without resume") from None
    if not isinstance(state, dict) or not {"step", "params", "optimizer"} <= set(state):
        raise ValueError(f"{path} is not a clipwb PO checkpoint; delete it and run without resume")
    return state


def _write_log(out_dir: Path, log: list[dict]) -> None:
    import csv
    import io

    atomic_write_text(out_dir / "log.json", json.dumps(log))
    buf = io.StringIO()
    if log:
        wr = csv.DictWriter(buf, fieldnames=list(log[0]))
        wr.writeheader()
        wr.writerows(log)
    atomic_write_text(out_dir / "log.csv", buf.getvalue())
