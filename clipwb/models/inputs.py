"""Model inputs: uint8 image arrays -> the model's normalised tensors, and normalised image features, with the
preprocessing (mean, std, size) open_clip keeps on the model, so that training and evaluation share one path."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def preprocess_stats(model) -> tuple[tuple, tuple, int]:
    """(mean, std, image_size) of the model's preprocessing (open_clip keeps it on ``model.visual``)."""
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else size
    return tuple(cfg.get("mean", _OPENAI_MEAN)), tuple(cfg.get("std", _OPENAI_STD)), int(size)


def images_to_tensor(images: np.ndarray, model) -> torch.Tensor:
    """uint8 (n, H, W, 3) (a numpy array or a uint8 tensor) -> normalised float (n, 3, S, S) on the model's device.

    For square images this equals open_clip's eval preprocess (resize shortest side, centre crop, to tensor,
    normalise) up to the resampling filter; when H == S it is exact (a test checks it)."""
    mean, std, size = preprocess_stats(model)
    if isinstance(images, torch.Tensor):  # a uint8 batch from a DataLoader (maybe pinned): copied asynchronously
        if images.dtype != torch.uint8:
            raise ValueError(f"image tensors must be uint8 (n, H, W, 3), got {images.dtype}")
        x = images.to(model_device(model), non_blocking=True)
    else:
        x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).to(model_device(model))
    x = x.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def is_transformer_tower(model) -> bool:
    """Whether the model's image tower is a transformer (open_clip's VisionTransformer), not a conv tower."""
    return hasattr(getattr(model, "visual", None), "transformer")


def eval_batch(model) -> int:
    """Images per forward pass when encoding for evaluation: 64 for a transformer tower on CPU, else 256. Measured
    where evaluations run, in a process that has already trained (``benchmarks/eval_batch.py``, 2-core AMD EPYC,
    1 024 images): the conv tower is fastest at 256 there (0.80 s against 0.88 s at 64), though a fresh process
    favours 64 (0.93 s against 1.18 s at 256); the ViT at 64 takes 0.93x its time at 256 and 0.95x at 128 (0.83x and
    0.96x fresh). Per-image features do not depend on it beyond float rounding (bit-equal there)."""
    return 64 if is_transformer_tower(model) and model_device(model).type == "cpu" else 256


@torch.no_grad()
def encode_images(model, images, batch_size: int | None = None) -> torch.Tensor:
    """Normalised image features for uint8 arrays (n, H, W, 3) or preprocessed tensors (n, 3, S, S), in batches
    of ``batch_size`` images (None: ``eval_batch(model)``)."""
    batch_size = batch_size or eval_batch(model)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        x = images_to_tensor(chunk, model) if isinstance(chunk, np.ndarray) else chunk.to(model_device(model))
        out.append(F.normalize(model.encode_image(x).float(), dim=-1))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def image_flops(model) -> int:
    """FLOPs of one image through the image tower (torch's ``FlopCounterMode``: 2 per multiply-add), at the
    model's input size. Counted on a copy in training mode with autograd on: in eval mode under no_grad,
    ``nn.MultiheadAttention`` takes a fused fast path whose work the counter does not see (a ViT then counts a
    third too little); the copy keeps the model's own BatchNorm statistics untouched."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).train()
    for p in m.parameters():
        p.requires_grad_(True)
    size = preprocess_stats(m)[2]
    x = torch.zeros(2, 3, size, size, device=model_device(m))
    with torch.enable_grad(), FlopCounterMode(display=False) as fc:
        m.encode_image(x)
    return int(fc.get_total_flops()) // 2
