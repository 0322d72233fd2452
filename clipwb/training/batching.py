"""Batches of a PO run: the data order (a seeded permutation per epoch, a function of the step only, so a resumed
run sees the same batches), the global batch split between processes, and a DataLoader that reads each step's
images (from memory or from ``data.store.DiskArray``) in worker processes."""
from __future__ import annotations

import math

import numpy as np
import torch

from .po_config import POConfig
from .distributed import Setup


def steps_per_epoch_of(data: dict, cfg: POConfig, world_size: int) -> int:
    n = len(data["typo"])
    if len(data["clean"]) != n or len(data["true"]) != n or len(data["written"]) != n:
        raise ValueError("data['clean'], ['typo'], ['true'], ['written'] must have the same length")
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world_size} processes")
    steps = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    if steps < 1:
        raise ValueError(f"{n} pairs do not fill one batch of {cfg.batch_size} with drop_last: lower batch_size")
    return steps



def batch_indices(step: int, steps_per_epoch: int, n: int, cfg: POConfig, rank: int, world_size: int):
    """(epoch, this process's indices) of optimiser step ``step``: a seeded permutation per epoch, the global batch
    split between processes (the ragged last batch of drop_last=False dealt round-robin)."""
    epoch, b = divmod(step, steps_per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
    idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
    per_rank = cfg.batch_size // world_size
    if len(idx) == cfg.batch_size:
        return epoch, idx[rank * per_rank:(rank + 1) * per_rank]
    return epoch, idx[rank::world_size]


class StepBatches(torch.utils.data.Dataset):
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
        epoch, idx = batch_indices(self.steps[j], self.spe, self.n, self.cfg, self.rank, self.world_size)
        if not self.need_images:
            return epoch, idx, None
        rows = idx.numpy()
        typo = self.data["typo"][rows]
        imgs = np.concatenate([typo, self.data["clean"][rows]]) if self.need_clean else typo
        return epoch, idx, torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.uint8))


def step_batches(data, steps: range, steps_per_epoch: int, n: int, cfg: POConfig, setup: "Setup",
                  need_clean: bool, need_images: bool):
    """Iterator over the steps' (epoch, indices, images) (``StepBatches`` through a DataLoader)."""
    ds = StepBatches(data, steps, steps_per_epoch, n, cfg, setup.rank, setup.world_size, need_clean, need_images)
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=cfg.num_workers,
                                            pin_memory=setup.device.type == "cuda",
                                            prefetch_factor=2 if cfg.num_workers else None,
                                            persistent_workers=False))

