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

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..evaluation.zeroshot import template_mean
from ..losses.po import po_loss, po_method, policy_logprobs
from .averaging import BMA, bma_weights
from .batching import batch_indices, step_batches, steps_per_epoch_of
from .checkpoints import Checkpoints, checkpoint_path, load_checkpoint, save_outputs
from .distributed import Setup, all_mean, resolve_device
from .po_config import (RESULT_NEUTRAL, TRAIN_MODES, POConfig, data_fingerprint, po_config, result_key,
                        run_identity)
from .reference import cached_reference_logprobs, class_features, logit_scale_of, reference_logprobs
from .schedule import warmup_cosine
from .tracking import StepTrackers
from .trainable import Trainable, fold_linear_head, frozen_copies, set_trainable

__all__ = ["BMA", "POConfig", "POResult", "RESULT_NEUTRAL", "TRAIN_MODES", "batch_indices", "bma_weights",
           "cached_reference_logprobs", "class_features", "data_fingerprint", "fold_linear_head", "load_checkpoint",
           "lr_at", "po_config", "reference_logprobs", "resolve_device", "result_key", "run_identity",
           "set_trainable", "train_po"]


def lr_at(step: int, total: int, cfg: POConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): ``schedule.warmup_cosine``."""
    return warmup_cosine(step, total, cfg.lr, cfg.warmup)


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


@dataclass
class _Fixed:
    """What every step of a run reads and never changes: the class prompts and their features (frozen text tower),
    the logit scale, the reference log-probs of every training image and the labels."""
    tokens: torch.Tensor
    text: torch.Tensor
    scale: torch.Tensor
    ref_typo: torch.Tensor
    ref_clean: torch.Tensor | None
    y_w: torch.Tensor
    y_l: torch.Tensor

    @classmethod
    def compute(cls, ref: nn.Module, tokenizer, classes: list, data, cfg: POConfig, setup: Setup,
                need_clean: bool) -> "_Fixed":
        device = setup.device
        ref_typo = cached_reference_logprobs(ref, tokenizer, classes, data["typo"], cfg.templates, setup.prec)
        ref_clean = (cached_reference_logprobs(ref, tokenizer, classes, data["clean"], cfg.templates, setup.prec)
                     if need_clean else None)
        tokens = tokenizer([t.format(c) for c in classes for t in cfg.templates]).to(device)
        with torch.no_grad():
            text = class_features(ref, tokens, len(classes))
        return cls(tokens, text, logit_scale_of(ref), ref_typo, ref_clean,
                   torch.as_tensor(np.asarray(data["true"]), device=device),
                   torch.as_tensor(np.asarray(data["written"]), device=device))


def _step(cfg: POConfig, setup: Setup, tr: Trainable, net, opt, fx: _Fixed, idx: torch.Tensor, images,
          lr: float) -> tuple[torch.Tensor, dict]:
    """One optimiser step on the batch ``idx``: the policy's log-probs of its typographic (and clean) images, the
    method's loss against the cached reference, backward, Adamax. Returns (loss, stats), stats averaged over
    processes."""
    for group in opt.param_groups:
        group["lr"] = lr
    x = tr.inputs(idx, images)
    with setup.prec.autocast_ctx(setup.device):
        img, txt = net(x, fx.tokens if cfg.train == "all" else None)
    n_classes = len(fx.text)
    txt = template_mean(txt, n_classes) if txt is not None else fx.text
    s = logit_scale_of(tr.model) if cfg.train == "all" else fx.scale
    logp = policy_logprobs(F.normalize(img.float(), dim=-1), txt, s, normalized=True)
    k, clean = len(idx), tr.need_clean
    loss, stats = po_loss(cfg.method, logp[:k], fx.ref_typo[idx], fx.y_w[idx], fx.y_l[idx],
                          logp[k:] if clean else None, fx.ref_clean[idx] if clean else None,
                          beta=cfg.beta_value, lam=cfg.lam, label_smoothing=cfg.label_smoothing,
                          reference_free=cfg.reference_free, kl_reduce=all_mean if setup.distributed else None,
                          kto_z0=cfg.kto_z0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    stats["loss"] = float(loss.detach())
    if setup.distributed:
        vec = all_mean(torch.tensor([stats[k_] for k_ in sorted(stats)], dtype=torch.float64, device=setup.device))
        stats = dict(zip(sorted(stats), vec.tolist()))
    return loss, stats


def _wrap(policy: nn.Module, setup: Setup) -> nn.Module:
    """The policy as the step calls it: under DistributedDataParallel with torchrun, compiled where asked."""
    net = policy
    if setup.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(policy, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
    return torch.compile(net) if setup.compiled else net


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
    setup = Setup.resolve(cfg, model)
    classes = list(classes)
    steps_per_epoch = steps_per_epoch_of(data, cfg, setup.world_size)
    total = steps_per_epoch * cfg.epochs
    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt = checkpoint_path(out_dir, resume, cfg, setup.rank)
    run_id = run_identity(cfg, data)
    trackers = StepTrackers(cfg.report_to, out_dir, enabled=setup.rank == 0)

    torch.manual_seed(cfg.seed)
    ref, policy_model = frozen_copies(model, setup)
    fingerprint = _fingerprint(policy_model)
    need_clean = po_method(cfg.method).needs_clean
    t0 = time.time()
    fx = _Fixed.compute(ref, tokenizer, classes, data, cfg, setup, need_clean)
    tr = Trainable(cfg, policy_model, ref, data, need_clean, int(fx.text.shape[-1]), setup)
    net = _wrap(tr.policy, setup)
    opt = torch.optim.Adamax(tr.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    bma = BMA(tr.names, tr.params, total, cfg.bma_alpha)
    checkpoints = Checkpoints(ckpt, out_dir, cfg, run_id, setup, total, fingerprint, tr.names, tr.params, opt, bma)
    start, log = checkpoints.restore() if resume else (0, [])

    bar = tqdm(total=total, initial=start, disable=not progress or setup.rank != 0,
               desc=f"{cfg.method} ({cfg.train})")
    batches = step_batches(data, range(start, total), steps_per_epoch, len(data["typo"]), cfg, setup, need_clean,
                           need_images=not tr.head)
    for step in range(start, total):
        epoch, idx, images = next(batches)
        lr = lr_at(step, total, cfg)
        _, stats = _step(cfg, setup, tr, net, opt, fx, idx.to(setup.device), images, lr)
        bma.add(step)
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
    if out_dir is not None and setup.rank == 0:
        save_outputs(out_dir, log, cfg, run_id, setup, total, train_seconds, (raw, avg) if save else None,
                     model_name, tokenizer)
    return POResult(raw, avg, log, train_seconds, total, cfg, out_dir, setup.prec.to_dict(), setup.compiled)
