"""The PO trainer's configuration and a run's identity: ``POConfig`` (the reference settings), ``po_config``
(a profile's settings), the result cache key of a config and the identity a checkpoint is checked against."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import profiles
from ..config import check_seed, with_overrides
from ..evaluation.zeroshot import OBJECT_TEMPLATES
from ..losses.po import KTO_Z0, po_method, po_methods
from ..precision import check_precision
from .tracking import check_report_to

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
    # images per forward pass of the image tower within a step (the loss and its one backward pass still see the
    # whole batch, so the gradient is the same up to float rounding): "auto" = 128 for transformer towers on CPU
    # (a 512-image batch in one pass runs ~10-30 % slower there: attention and MLP activations outgrow the caches;
    # ``benchmarks/po_forward_chunk.py``), the whole batch otherwise; an int n: chunks of n; 0: the whole batch
    forward_chunk: int | str = "auto"
    # the policy's forward through an open_clip ModifiedResNet tower (RN50 family, the tiny conv tower): "auto" =
    # BatchNorms folded into their convolutions and the attention pool computing only the query it returns (the same
    # function up to float rounding, fewer passes: training.fast_tower) where the tower is one; "off": open_clip's
    # own forward. Other towers (ViT) are unaffected
    fast_tower: str = "auto"

    def __post_init__(self):
        if self.method not in po_methods():
            raise ValueError(f"method must be one of {list(po_methods())}, got {self.method!r}")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"train must be one of {list(TRAIN_MODES)}, got {self.train!r}")
        for name in ("batch_size", "epochs", "last_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_seed("seed", self.seed)
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
        if not (self.forward_chunk == "auto" or (isinstance(self.forward_chunk, int)
                                                  and not isinstance(self.forward_chunk, bool)
                                                  and self.forward_chunk >= 0)):
            raise ValueError(f"forward_chunk must be 'auto' or an int >= 0 (0: the whole batch in one pass), got "
                             f"{self.forward_chunk!r}")
        if self.fast_tower not in ("auto", "off"):
            raise ValueError(f"fast_tower must be 'auto' or 'off', got {self.fast_tower!r}")
        if self.kto_z0 not in KTO_Z0:
            raise ValueError(f"kto_z0 must be one of {list(KTO_Z0)}, got {self.kto_z0!r}")

    @property
    def beta_value(self) -> float:
        return po_method(self.method).default_beta if self.beta is None else self.beta


def po_config(profile: str = "reference", **overrides) -> POConfig:
    """The profile's settings, its per-method settings for ``overrides["method"]``, then ``overrides``."""
    base = profiles.profile("po", profile)
    per = profiles.profile("po_methods", profile).get(overrides.get("method", POConfig.method), {})
    return with_overrides(POConfig(), {**base, **per, **overrides})


# POConfig fields that do not change the weights (a resume may change them)
_NOT_IDENTITY = ("checkpoint_every", "device", "precision", "num_workers", "report_to", "compile", "forward_chunk",
                 "fast_tower")


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
    for k in ("compile", "forward_chunk"):  # resolved per device (the cache is per machine): as before they existed
        if d[k] == "auto":
            del d[k]
    # resolved per model: the run cache adds whether it applies (experiments.context.RunKeys), so that a ViT run's key
    # is as before it existed and a conv tower's run made with open_clip's forward is not read back for it
    if d["fast_tower"] == "auto":
        del d["fast_tower"]
    return d


def run_identity(cfg: POConfig, data: dict) -> dict:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IDENTITY}
    d["templates"] = list(d["templates"])
    return {"config": d, "data": data_fingerprint(data)}

