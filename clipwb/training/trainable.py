"""What trains in a PO run (``POConfig.train``): which parameters, what one step feeds the policy, and how the
final raw and averaged weights are written back into an open_clip model."""
from __future__ import annotations

import copy
import functools

import torch
import torch.nn as nn

from ..models.inputs import images_to_tensor, is_transformer_tower
from .reference import image_features
from .averaging import BMA
from .fast_tower import fast_tower_applies, resnet_policy_forward
from .distributed import Setup
from .po_config import POConfig


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


def uses_fast_tower(cfg: POConfig, model: nn.Module, as_policy: bool = False) -> bool:
    """Whether ``cfg``'s policy runs ``training.fast_tower``'s forward on ``model`` (``POConfig.fast_tower``
    "auto", an open_clip ModifiedResNet tower in eval mode, and a mode that runs the tower); ``as_policy``: once the
    trainer has put ``model`` in eval mode (what a run's cache key asks of the pretrained model)."""
    return cfg.fast_tower == "auto" and cfg.train != "linear_head" and fast_tower_applies(model, as_policy)


def policy_tower(model: nn.Module, fast: bool):
    """The image tower's forward as the policy runs it: ``training.fast_tower``'s where ``fast`` (see
    ``uses_fast_tower``), else the tower itself."""
    return functools.partial(resnet_policy_forward, model.visual) if fast else model.visual


def forward_chunk(setting, model: nn.Module, device) -> int:
    """Images per forward pass of the image tower (``POConfig.forward_chunk``; 0 = the whole batch): "auto" is 128
    for a transformer tower on CPU, where whole 512-image batches outgrow the caches, else 0."""
    if setting != "auto":
        return int(setting)
    return 128 if is_transformer_tower(model) and torch.device(device).type == "cpu" else 0


class Policy(nn.Module):
    """What one step differentiates: image features (through the tower, or a head on cached features) and, when
    the text tower trains, the class features."""

    def __init__(self, model: nn.Module, mode: str, dim: int, chunk: int = 0, fast: bool = False):
        super().__init__()
        self.model, self.mode, self.chunk = model, mode, chunk
        self.fast = fast  # training.fast_tower: folded BatchNorms, one-query attention pool (ModifiedResNet)
        self.head = nn.Linear(dim, dim, bias=False) if mode == "linear_head" else None
        if self.head is not None:
            nn.init.eye_(self.head.weight)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None):
        if self.head is not None:
            img = self.head(images)
        else:
            tower = policy_tower(self.model, self.fast)
            if self.chunk and len(images) > self.chunk:  # one graph over the chunks: one backward, the same loss
                img = torch.cat([tower(images[i:i + self.chunk]) for i in range(0, len(images), self.chunk)])
            else:
                img = tower(images)
        txt = self.model.encode_text(tokens) if tokens is not None else None
        return img, txt


class Trainable:
    """Everything the training mode changes: which parameters train, what one step feeds the policy (images
    through the tower, or the frozen tower's cached features for ``linear_head``) and how the final raw and
    averaged weights are written into the model (copied, or the head folded into the output projection)."""

    def __init__(self, cfg: POConfig, policy_model: nn.Module, ref: nn.Module, data: dict, need_clean: bool,
                 dim: int, setup: Setup):
        self.cfg, self.model, self.need_clean, self.prec = cfg, policy_model, need_clean, setup.prec
        self.head = cfg.train == "linear_head"
        set_trainable(policy_model, "image" if self.head else cfg.train, cfg.last_k)
        if self.head:
            for p in policy_model.parameters():
                p.requires_grad_(False)
            self.cached_typo = image_features(ref, data["typo"], 512, setup.device, setup.prec)
            self.cached_clean = image_features(ref, data["clean"], 512, setup.device, setup.prec) if need_clean else None
        chunk = forward_chunk(cfg.forward_chunk, policy_model, setup.device)
        self.policy = Policy(policy_model, cfg.train, dim, chunk, fast=uses_fast_tower(cfg, policy_model)).to(setup.device)
        self.names = [nm for nm, p in self.policy.named_parameters() if p.requires_grad]
        self.params = [p for p in self.policy.parameters() if p.requires_grad]

    def inputs(self, idx: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        """The step's input: attacked images, then their clean counterparts (for the KL term); ``images`` is the
        step's uint8 batch (``StepBatches``), None for the head, which reads its cached features."""
        if self.head:
            return torch.cat([self.cached_typo[idx], self.cached_clean[idx]]) if self.need_clean else \
                self.cached_typo[idx]
        return self.prec.layout(images_to_tensor(images, self.model))

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



def frozen_copies(model: nn.Module, setup: Setup) -> tuple[nn.Module, nn.Module]:
    """(reference, policy) copies of ``model`` on the device; the reference never trains."""
    ref = copy.deepcopy(model).to(setup.device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    policy_model = copy.deepcopy(model).to(setup.device).eval()
    return setup.prec.layout(ref), setup.prec.layout(policy_model)

