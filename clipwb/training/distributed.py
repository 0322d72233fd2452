"""torch.distributed helpers of the trainers (as open_clip_train's ``distributed.py``): the process group of a
``torchrun`` launch, a mean over processes, the device of this process, and a run's ``Setup`` (rank, device,
precision, compilation)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..precision import Precision, resolve_precision

if TYPE_CHECKING:
    from .po_config import POConfig


def current_group():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def all_mean(x: torch.Tensor) -> torch.Tensor:
    dist = current_group()
    if dist is None:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    dist = current_group()
    if torch.cuda.is_available():
        return torch.device("cuda", dist.get_rank() % torch.cuda.device_count() if dist else 0)
    return torch.device("cpu")


@dataclass
class Setup:
    """Where and how a run trains: process rank and count (torchrun), device, precision."""
    rank: int
    world_size: int
    device: torch.device
    prec: Precision
    distributed: bool
    compiled: bool = False

    @classmethod
    def resolve(cls, cfg: POConfig, model=None) -> "Setup":
        """``model``: the model to train, for the per-model precision choice (``precision.resolve_precision``)."""
        dist = current_group()
        device = resolve_device(cfg.device)
        compiled = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
        prec = resolve_precision(cfg.precision, device, model=model)
        if dist is not None and device.type == "cpu":  # a timed choice: every process takes rank 0's
            import torch.distributed as tdist

            box = [prec]
            tdist.broadcast_object_list(box, src=0)
            prec = box[0]
        return cls(dist.get_rank() if dist else 0, dist.get_world_size() if dist else 1, device, prec,
                   dist is not None, compiled)
