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
from ..cache import cached_tensors, fingerprint
from ..config import with_overrides
from ..evaluation.zeroshot import OBJECT_TEMPLATES, template_mean
from ..models.inputs import images_to_tensor
from ..fileio import atomic_write, atomic_write_text, check_writable_dir, clean_stale_temp_files
from ..losses.po import DEFAULT_BETA, KTO_Z0, METHODS, po_loss, policy_logprobs
from ..precision import Precision, check_precision, resolve_precision
from .schedule import warmup_cosine
from .tracking import StepTrackers, check_report_to

TRAIN_MODES = ("image", "all", "last_k", "linear_head")


@dataclass(frozen=True)
class POConfig:
    """Defaults = the reference settings (Adamax lr 2e-5, cosine to 0, no warmup, 512 pairs, 3 epochs, seed 0,
    drop_last, BMA over all iterates). ``clipwb.profiles.PROFILES["po"]["embedded"]`` holds the tiny model's own
    settings."""
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
    # DataLoader worker processes that read and stack the next batches while the device trains (0: in the training
    # process); batches are the same either way, and pinned when training on CUDA
    num_workers: int = 0
    # torch.compile of the policy step: "auto" = on for CUDA (the H100 floor measured 11 088 img/s compiled against
    # 7 190 eager for ViT-B/32), off on CPU (compile time is not repaid by the tiny model's short runs); "on" / "off"
    compile: str = "auto"
    report_to: tuple[str, ...] = ()  # ("tensorboard",): step scalars also as TensorBoard events in out_dir/tensorboard
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
        for name in ("lam", "weight_decay", "warmup", "checkpoint_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.bma_alpha > 0:
            raise ValueError(f"bma_alpha must be > 0, got {self.bma_alpha}")
        if not self.templates or not all(isinstance(t, str) and "{}" in t for t in self.templates):
            raise ValueError(f"templates must be a non-empty list of prompts with a '{{}}' for the class name, e.g. "
                             f"['a photo of a {{}}.'], got {list(self.templates)!r}")
        check_precision(self.precision)
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be 'auto', 'on' or 'off', got {self.compile!r}")
        object.__setattr__(self, "report_to", check_report_to(self.report_to))
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


def cached_reference_logprobs(model, tokenizer, classes, images: np.ndarray, templates, precision: Precision,
                              cache: bool = True) -> torch.Tensor:
    """``reference_logprobs`` through the run cache (``clipwb.cache``), keyed by the reference model's weights, the
    images, classes, templates and precision: every method and sweep point trained from one pretrained model on one
    set computes them once. Returned on the model's device."""
    device = next(model.parameters()).device

    def run():
        return {"logp": reference_logprobs(model, tokenizer, classes, images, templates, precision=precision)}

    key = [fingerprint(model), fingerprint(images), list(classes), list(templates), precision.to_dict()]
    return cached_tensors("ref-logprobs", key, run, enabled=cache)["logp"].to(device)


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
    compiled: bool = False  # the step ran under torch.compile


def _fingerprint(model: nn.Module) -> list:
    return [sum(p.numel() for p in model.parameters()),
            round(float(sum(p.detach().double().sum() for p in model.parameters())), 4)]


class BMA:
    """Bayesian model averaging over all iterates, the initial weights included: running sums of w_k theta_k and
    w_k with w = ``bma_weights(total, alpha)``, kept in float64."""

    def __init__(self, names: list[str], params: list[torch.Tensor], total: int, alpha: float):
        self.names, self.params = names, params
        self.w = bma_weights(total, alpha)
        self.sum = {nm: p.detach().double() * self.w[0] for nm, p in zip(names, params)}
        self.wsum = float(self.w[0])

    @torch.no_grad()
    def add(self, step: int) -> None:
        """Add the iterate after optimiser step ``step`` (0-based)."""
        for nm, p in zip(self.names, self.params):
            self.sum[nm] += p.detach().double() * self.w[step + 1]
        self.wsum += float(self.w[step + 1])

    def average(self, name: str) -> torch.Tensor:
        return self.sum[name] / self.wsum

    def state(self) -> dict:
        return {"bma_sum": {k: v.cpu() for k, v in self.sum.items()}, "bma_wsum": self.wsum}

    def load(self, state: dict, device) -> None:
        self.sum = {nm: t.to(device) for nm, t in state["bma_sum"].items()}
        self.wsum = float(state["bma_wsum"])


@dataclass
class _Setup:
    """Where and how a run trains: process rank and count (torchrun), device, precision."""
    rank: int
    world_size: int
    device: torch.device
    prec: Precision
    distributed: bool
    compiled: bool = False

    @classmethod
    def resolve(cls, cfg: POConfig) -> "_Setup":
        dist = _dist()
        device = resolve_device(cfg.device)
        compiled = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
        return cls(dist.get_rank() if dist else 0, dist.get_world_size() if dist else 1, device,
                   resolve_precision(cfg.precision, device), dist is not None, compiled)


def _steps_per_epoch(data: dict, cfg: POConfig, world_size: int) -> int:
    n = len(data["typo"])
    if len(data["clean"]) != n or len(data["true"]) != n or len(data["written"]) != n:
        raise ValueError("data['clean'], ['typo'], ['true'], ['written'] must have the same length")
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world_size} processes")
    steps = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    if steps < 1:
        raise ValueError(f"{n} pairs do not fill one batch of {cfg.batch_size} with drop_last: lower batch_size")
    return steps


def _checkpoint_path(out_dir: Path | None, resume: bool, cfg: POConfig, rank: int) -> Path | None:
    """``out_dir/checkpoint.pt`` after checking the folder (and, to resume, that a checkpoint is there)."""
    if resume and out_dir is None:
        raise ValueError("resume needs out_dir (where the checkpoint is)")
    if out_dir is None:
        return None
    ckpt = out_dir / "checkpoint.pt"
    check_writable_dir(out_dir, "out_dir")
    if rank == 0:
        clean_stale_temp_files(out_dir)
    if resume and not ckpt.is_file():
        raise ValueError(f"nothing to resume: no checkpoint at {ckpt} (a run writes one every checkpoint_every "
                         f"steps; checkpoint_every={cfg.checkpoint_every}); run without resume to start at step 0")
    return ckpt


def _batch_indices(step: int, steps_per_epoch: int, n: int, cfg: POConfig, rank: int, world_size: int):
    """(epoch, this process's indices) of optimiser step ``step``: a seeded permutation per epoch, the global batch
    split between processes (the ragged last batch of drop_last=False dealt round-robin)."""
    epoch, b = divmod(step, steps_per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
    idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
    per_rank = cfg.batch_size // world_size
    if len(idx) == cfg.batch_size:
        return epoch, idx[rank * per_rank:(rank + 1) * per_rank]
    return epoch, idx[rank::world_size]


class _StepBatches(torch.utils.data.Dataset):
    """Item j = (epoch, this process's indices, its uint8 images) of optimiser step ``steps[j]``: attacked images,
    then clean ones when the loss needs them, read from ``data`` (arrays in memory or ``data.store.DiskArray``);
    images None where the step reads cached features (``linear_head``). A DataLoader over it prefetches batches in
    worker processes; the content is a function of the step only, so workers change no result."""

    def __init__(self, data, steps: range, steps_per_epoch: int, n: int, cfg: POConfig, rank: int, world_size: int,
                 need_clean: bool, need_images: bool):
        self.data, self.steps, self.spe, self.n = data, steps, steps_per_epoch, n
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.need_clean, self.need_images = need_clean, need_images

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, j: int):
        epoch, idx = _batch_indices(self.steps[j], self.spe, self.n, self.cfg, self.rank, self.world_size)
        if not self.need_images:
            return epoch, idx, None
        rows = idx.numpy()
        typo = self.data["typo"][rows]
        imgs = np.concatenate([typo, self.data["clean"][rows]]) if self.need_clean else typo
        return epoch, idx, torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.uint8))


def _step_batches(data, steps: range, steps_per_epoch: int, n: int, cfg: POConfig, setup: "_Setup",
                  need_clean: bool, need_images: bool):
    """Iterator over the steps' (epoch, indices, images) (``_StepBatches`` through a DataLoader)."""
    ds = _StepBatches(data, steps, steps_per_epoch, n, cfg, setup.rank, setup.world_size, need_clean, need_images)
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=cfg.num_workers,
                                            pin_memory=setup.device.type == "cuda",
                                            prefetch_factor=2 if cfg.num_workers else None,
                                            persistent_workers=False))


class _Trainable:
    """Everything the training mode changes: which parameters train, what one step feeds the policy (images
    through the tower, or the frozen tower's cached features for ``linear_head``) and how the final raw and
    averaged weights are written into the model (copied, or the head folded into the output projection)."""

    def __init__(self, cfg: POConfig, policy_model: nn.Module, ref: nn.Module, data: dict, need_clean: bool,
                 dim: int, setup: _Setup):
        self.cfg, self.model, self.need_clean, self.prec = cfg, policy_model, need_clean, setup.prec
        self.head = cfg.train == "linear_head"
        set_trainable(policy_model, "image" if self.head else cfg.train, cfg.last_k)
        if self.head:
            for p in policy_model.parameters():
                p.requires_grad_(False)
            self.cached_typo = _features(ref, data["typo"], 512, setup.device, setup.prec)
            self.cached_clean = _features(ref, data["clean"], 512, setup.device, setup.prec) if need_clean else None
        self.policy = _Policy(policy_model, cfg.train, dim).to(setup.device)
        self.names = [nm for nm, p in self.policy.named_parameters() if p.requires_grad]
        self.params = [p for p in self.policy.parameters() if p.requires_grad]

    def inputs(self, idx: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        """The step's input: attacked images, then their clean counterparts (for the KL term); ``images`` is the
        step's uint8 batch (``_StepBatches``), None for the head, which reads its cached features."""
        if self.head:
            return torch.cat([self.cached_typo[idx], self.cached_clean[idx]]) if self.need_clean else \
                self.cached_typo[idx]
        x = images_to_tensor(images, self.model)
        return x.contiguous(memory_format=torch.channels_last) if self.prec.channels_last else x

    @torch.no_grad()
    def final_models(self, bma: BMA) -> tuple[nn.Module, nn.Module]:
        """(raw, averaged) models, frozen, in eval mode and contiguous memory format."""
        raw, avg = self.model, copy.deepcopy(self.model)
        if self.head:
            fold_linear_head(raw, self.policy.head.weight.detach().float())
            fold_linear_head(avg, bma.average("head.weight").float())
        else:
            avg_params = dict(avg.named_parameters())
            for nm in self.names:
                target = avg_params[nm.removeprefix("model.")]
                target.copy_(bma.average(nm).to(target))
        for m in (raw, avg):
            m.to(memory_format=torch.contiguous_format)
            for p in m.parameters():
                p.requires_grad_(False)
            m.eval()
        return raw, avg


@dataclass
class _Checkpoints:
    """Atomic checkpoints of a run (trainable parameters, optimiser, BMA sums, log, the run's identity) and the
    checked restore of one: a checkpoint of another model, data or config is refused."""
    path: Path | None
    out_dir: Path | None
    cfg: POConfig
    run_id: dict
    setup: _Setup
    total: int
    fingerprint: list
    names: list[str]
    params: list[torch.Tensor]
    opt: torch.optim.Optimizer
    bma: BMA

    def save(self, step: int, log: list[dict]) -> None:
        if self.path is None or self.setup.rank != 0:
            return
        state = {"step": step, "total": self.total, "names": self.names, "fingerprint": self.fingerprint,
                 "params": {nm: p.detach().cpu() for nm, p in zip(self.names, self.params)},
                 "optimizer": self.opt.state_dict(), **self.bma.state(), "log": log,
                 "config": json.dumps(dataclasses.asdict(self.cfg), default=str),
                 "run": json.dumps(self.run_id), "precision": json.dumps(self.setup.prec.to_dict())}
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        _write_log(self.out_dir, log)

    def restore(self) -> tuple[int, list[dict]]:
        """Load the checkpoint into the parameters, optimiser and BMA; returns (step, log) to go on from."""
        state = load_checkpoint(self.path, self.setup.device)
        _check_same_run(self.path, json.loads(state.get("run", "{}")), self.run_id)
        if state["fingerprint"] != self.fingerprint or state["names"] != self.names or state["total"] != self.total:
            raise ValueError(f"cannot resume from {self.path}: it belongs to another model, data size or config; run "
                             f"without resume to start over, or pass another out_dir")
        with torch.no_grad():
            for nm, p in zip(self.names, self.params):
                p.copy_(state["params"][nm])
        self.opt.load_state_dict(state["optimizer"])
        self.bma.load(state, self.setup.device)
        return int(state["step"]), list(state["log"])


def _frozen_copies(model: nn.Module, setup: _Setup) -> tuple[nn.Module, nn.Module]:
    """(reference, policy) copies of ``model`` on the device; the reference never trains."""
    ref = copy.deepcopy(model).to(setup.device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    policy_model = copy.deepcopy(model).to(setup.device).eval()
    if setup.prec.channels_last:
        ref = ref.to(memory_format=torch.channels_last)
        policy_model = policy_model.to(memory_format=torch.channels_last)
    return ref, policy_model


def _save_outputs(out_dir: Path, log, cfg: POConfig, run_id: dict, setup: _Setup, total: int, train_seconds: float,
                  models: tuple[nn.Module, nn.Module] | None, model_name: str, tokenizer=None) -> None:
    _write_log(out_dir, log)
    atomic_write_text(out_dir / "run.json", json.dumps(
        {"config": dataclasses.asdict(cfg), "run": run_id, "precision": setup.prec.to_dict(),
         "compiled": setup.compiled, "steps": total,
         "train_seconds": train_seconds}, indent=1, default=str))
    if models is not None:
        from ..models.loading import save_model

        for sub, m, what in (("raw", models[0], "final weights"), ("avg", models[1], "Beta-weighted model average")):
            card = {"description": f"{model_name} fine-tuned against typographic attacks by clipwb ({cfg.method.upper()}, "
                                   f"{what}).",
                    "details": {"Method": cfg.method, "Trained": cfg.train, "Steps": total, "Seed": cfg.seed,
                                "Learning rate": cfg.lr, "Pairs per step": cfg.batch_size}}
            save_model(m, out_dir / sub, model_name, tokenizer=tokenizer, model_card=card)


def train_po(model: nn.Module, tokenizer, classes, data: dict, cfg: POConfig | None = None,
             out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
             save: bool = True, on_step=None, model_name: str = "clipwb-tiny") -> POResult:
    """Train ``model`` (a copy; the argument is not modified) on ``data``, a ``PreferencePairs`` (or a mapping
    with its "clean", "typo": uint8 (n, H, W, 3), "true", "written": int (n,)), and return raw and averaged
    models.

    ``out_dir`` receives checkpoints (``checkpoint.pt``), the per-step log (``log.csv``, ``log.json``) and, with
    ``save``, the final models in open_clip's format (``raw/``, ``avg/``). ``on_step(step, stats)`` is called
    after every optimiser step (tests use it to interrupt a run). ``model_name`` is the open_clip config name
    written beside the saved weights (``LoadedModel.name``)."""
    from ..progress import tqdm

    cfg = cfg or POConfig()
    setup = _Setup.resolve(cfg)
    rank, world_size, device = setup.rank, setup.world_size, setup.device
    classes = list(classes)
    n = len(data["typo"])
    steps_per_epoch = _steps_per_epoch(data, cfg, world_size)
    total = steps_per_epoch * cfg.epochs
    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt = _checkpoint_path(out_dir, resume, cfg, rank)
    run_id = run_identity(cfg, data)
    trackers = StepTrackers(cfg.report_to, out_dir, enabled=rank == 0)

    torch.manual_seed(cfg.seed)
    ref, policy_model = _frozen_copies(model, setup)
    fingerprint = _fingerprint(policy_model)
    y_w = torch.as_tensor(np.asarray(data["true"]), device=device)
    y_l = torch.as_tensor(np.asarray(data["written"]), device=device)
    need_clean = cfg.method != "ce"

    t0 = time.time()
    ref_typo = cached_reference_logprobs(ref, tokenizer, classes, data["typo"], cfg.templates, setup.prec)
    ref_clean = (cached_reference_logprobs(ref, tokenizer, classes, data["clean"], cfg.templates, setup.prec)
                 if need_clean else None)
    tokens = tokenizer([t.format(c) for c in classes for t in cfg.templates]).to(device)
    with torch.no_grad():
        fixed_txt = class_features(ref, tokens, len(classes))
    scale = _logit_scale(ref)

    tr = _Trainable(cfg, policy_model, ref, data, need_clean, int(fixed_txt.shape[-1]), setup)
    names, params = tr.names, tr.params
    net = tr.policy
    if setup.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(tr.policy, device_ids=[device.index] if device.type == "cuda" else None)
    if setup.compiled:
        net = torch.compile(net)
    opt = torch.optim.Adamax(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    bma = BMA(names, params, total, cfg.bma_alpha)
    checkpoints = _Checkpoints(ckpt, out_dir, cfg, run_id, setup, total, fingerprint, names, params, opt, bma)
    start, log = checkpoints.restore() if resume else (0, [])

    bar = tqdm(total=total, initial=start, disable=not progress or rank != 0, desc=f"{cfg.method} ({cfg.train})")
    batches = _step_batches(data, range(start, total), steps_per_epoch, n, cfg, setup, need_clean,
                            need_images=not tr.head)
    for step in range(start, total):
        epoch, idx, images = next(batches)
        idx = idx.to(device)
        lr = lr_at(step, total, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        x = tr.inputs(idx, images)
        with setup.prec.autocast_ctx(device):
            img, txt = net(x, tokens if cfg.train == "all" else None)
        txt = template_mean(txt, len(classes)) if txt is not None else fixed_txt
        s = _logit_scale(policy_model) if cfg.train == "all" else scale
        logp = policy_logprobs(F.normalize(img.float(), dim=-1), txt, s, normalized=True)
        k = len(idx)
        loss, stats = po_loss(cfg.method, logp[:k], ref_typo[idx], y_w[idx], y_l[idx],
                              logp[k:] if need_clean else None, ref_clean[idx] if need_clean else None,
                              beta=cfg.beta_value, lam=cfg.lam, label_smoothing=cfg.label_smoothing,
                              reference_free=cfg.reference_free, kl_reduce=_all_mean if setup.distributed else None,
                              kto_z0=cfg.kto_z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bma.add(step)
        stats["loss"] = float(loss.detach())
        if setup.distributed:
            vec = _all_mean(torch.tensor([stats[k_] for k_ in sorted(stats)], dtype=torch.float64, device=device))
            stats = dict(zip(sorted(stats), vec.tolist()))
        row = {"step": step + 1, "epoch": epoch, "lr": lr, **stats, "seconds": time.time() - t0}
        log.append(row)
        trackers.log(step + 1, row)
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.4f}", acc=f"{stats['pref_acc']:.2f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            checkpoints.save(step + 1, log)
        if on_step is not None:
            on_step(step + 1, row)
    bar.close()
    trackers.close()
    train_seconds = time.time() - t0

    raw, avg = tr.final_models(bma)
    if out_dir is not None and rank == 0:
        _save_outputs(out_dir, log, cfg, run_id, setup, total, train_seconds, (raw, avg) if save else None,
                      model_name, tokenizer)
    return POResult(raw, avg, log, train_seconds, total, cfg, out_dir, setup.prec.to_dict(), setup.compiled)


# -- run identity, checkpoints, output folders -------------------------------------------------------------------
# POConfig fields that do not change the weights (a resume may change them)
_NOT_IDENTITY = ("checkpoint_every", "device", "precision", "num_workers", "report_to", "compile")


def data_fingerprint(data: dict) -> str:
    """A hash of the training arrays (images and labels): a resume on other data is refused."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for key in ("typo", "clean", "true", "written"):
        if hasattr(data[key], "fingerprint_token"):  # on disk (data.store.DiskArray): its content digest
            h.update(f"{key}{data[key].fingerprint_token()}".encode())
            continue
        a = np.ascontiguousarray(np.asarray(data[key]))
        h.update(f"{key}{a.shape}{a.dtype}".encode())
        h.update(a.data)
    return h.hexdigest()


# POConfig fields that change how a run is carried out, never a number it produces: left out of result cache keys
RESULT_NEUTRAL = ("num_workers", "report_to")


def result_key(cfg: POConfig) -> dict:
    """The config as a result cache key: every field that can change a number (``RESULT_NEUTRAL`` left out, so
    that caches written before those options existed stay valid)."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESULT_NEUTRAL}
    if d["compile"] == "auto":  # resolved per device, and the cache is per machine: as before the option existed
        del d["compile"]
    return d


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
