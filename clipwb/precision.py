"""Numeric precision of training and feature extraction, chosen per machine by capability and measurement.

``precision="auto"`` (the default of every config) resolves to

- ``bf16`` (bf16 autocast + channels-last) on CUDA devices that support bf16;
- on CPUs: a one-time micro-benchmark (a small conv tower, forward + backward) measures fp32 in the contiguous and
  the channels-last memory layout and, only on CPUs with native bf16 (``avx512_bf16`` or ``amx_bf16`` in their
  flags), bf16 autocast with channels-last; the fastest wins (bf16 must be 1.1x faster, channels-last 1.05x). The
  result is cached per machine (CPU model, flags, threads, torch version) in ``<clipwb cache>/precision.json``.
  Trainers pass their model: on CPUs with native bf16 the same three variants are then timed on that model's own
  image tower (cached per model), since bf16 speeds the conv tower 2x and slows the small ViT 1.8x there;
  On CPUs without native bf16 autocast emulates bf16 and runs about 20x slower than fp32 (measured on a 2-core
  AMD EPYC with AVX2 only), so bf16 is not even tried there;
- ``fp32`` on any other device.

``bf16`` and ``fp32`` force a precision (bf16 with channels-last, fp32 contiguous); ``CLIPWB_PRECISION`` (same
values) overrides ``auto`` for a whole run.
Results computed in bf16 and in fp32 differ slightly: every run records the precision it used (``describe``).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "fma")
# bf16 must be at least this much faster than the best fp32 layout in the micro-benchmark to be chosen, and
# channels-last this much faster than the contiguous layout
_MIN_SPEEDUP = 1.1
_MIN_SPEEDUP_LAYOUT = 1.05


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16" or "fp32"
    reason: str  # why auto chose it (or "forced")
    channels_last: bool = False  # conv towers in NHWC memory layout (oneDNN / cuDNN kernels)

    @property
    def autocast(self) -> bool:
        return self.name == "bf16"

    def autocast_ctx(self, device: torch.device | str):
        dev = torch.device(device).type
        return torch.autocast(dev, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def layout(self, x):
        """``x`` (a conv tower or its input batch) in this precision's memory format: channels-last where
        ``channels_last``, else ``x`` itself."""
        return x.to(memory_format=torch.channels_last) if self.channels_last else x

    def to_dict(self) -> dict:
        return asdict(self)

    def cache_key(self) -> dict:
        """What a result computed in this precision is cached under (the reason is left out: it does not change a
        number)."""
        return {"precision": self.name, "channels_last": self.channels_last}


def check_precision(setting: str) -> str:
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {setting!r}")
    return setting


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """{"model": lscpu's model name, "flags": the flags that matter for speed, "bf16_native": bool}."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = val.strip()
            elif key == "flags" and not flags:
                flags = set(val.split())
    except OSError:  # not Linux: no flags to read, so no native bf16 claimed
        pass
    return {"model": model, "flags": [f for f in _REPORTED_FLAGS if f in flags],
            "bf16_native": any(f in flags for f in _BF16_FLAGS), "threads": torch.get_num_threads()}


def cpu_tier(flags) -> str:
    """The widest vector unit of a CPU's ``flags``, as speed depends on it: "amx", "avx512-bf16", "avx512", "avx2"
    or "" (none of them). Two CPUs of one lscpu model name can differ here (an "AMD EPYC" is a Zen 3 with AVX2 only
    or a Zen 4 with AVX-512 and bf16)."""
    flags = set(flags)
    for flag, tier in (("amx_bf16", "amx"), ("avx512_bf16", "avx512-bf16"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return tier
    return ""


def device_slug(device) -> str:
    """The device named by its model for result file names: the GPU's name, or the CPU's lscpu model name and its
    vector tier (``cpu_tier``: "amd-epyc-avx2" and "amd-epyc-avx512-bf16" are different machines)."""
    import re

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        info = cpu_info()
        name = " ".join(x for x in (info["model"][:40], cpu_tier(info["flags"])) if x)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or device.type


def _bench_net() -> torch.nn.Module:
    """A small conv tower shaped like the tiny CLIP's image tower (64 px, stride-2 stem, 32-256 channels)."""
    torch.manual_seed(0)
    c = torch.nn.Conv2d
    return torch.nn.Sequential(
        c(3, 32, 3, stride=2, padding=1), torch.nn.ReLU(), c(32, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AvgPool2d(2), c(32, 64, 1), torch.nn.ReLU(), c(64, 64, 3, padding=1), torch.nn.ReLU(),
        c(64, 128, 1), torch.nn.AvgPool2d(2), c(128, 256, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(256, 128))


def measure_cpu_variants(bf16: bool, batch: int = 32, side: int = 64, repeats: int = 3,
                         net: torch.nn.Module | None = None) -> dict:
    """Seconds of a small conv net's (or ``net``'s: an image tower) forward + backward on the CPU for fp32
    (contiguous and channels-last) and, with ``bf16``, bf16 autocast + channels-last; the variants interleaved,
    median of ``repeats``."""
    import copy

    x = torch.randn(batch, 3, side, side)
    variants = {"fp32": (False, False), "fp32_cl": (False, True)}
    if bf16:
        variants["bf16_cl"] = (True, True)
    base = net if net is not None else _bench_net()
    nets = {k: copy.deepcopy(base).train().to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            for k, (_, cl) in variants.items()}
    inputs = {k: x.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
              for k, (_, cl) in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats + 1):  # the first round warms up
        for k, (amp, _) in variants.items():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = nets[k](inputs[k])
            out.float().square().mean().backward()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def _image_side(tower: torch.nn.Module, default: int = 64) -> int:
    size = getattr(tower, "image_size", None)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return int(size) if size else default


def model_signature(model: torch.nn.Module) -> str:
    """What the per-model choice is keyed by: the image tower's class, parameter count and input side."""
    v = getattr(model, "visual", model)
    return f"{type(v).__name__}:{sum(p.numel() for p in v.parameters())}:{_image_side(v)}"


def _cache_file(cache: str | Path | None) -> Path:
    if cache is not None and str(cache).endswith("precision.json"):
        return Path(cache)
    return Path(cache or os.environ.get("CLIPWB_CACHE") or Path.home() / ".cache" / "clipwb") / "precision.json"


def measured_cpu_variants(cache: str | Path | None = None, model: torch.nn.Module | None = None) -> dict:
    """This machine's ``measure_cpu_variants`` seconds, measured once per machine (CPU, flags, torch) and kept in
    ``<cache>/precision.json``: what ``auto`` decides from, and the main job's time calibration. With ``model``: that
    model's image tower measured instead (batch 16 at its input side), kept per ``model_signature``."""
    info = cpu_info()
    key = json.dumps([info, torch.__version__, 2] + ([model_signature(model)] if model is not None else []),
                     sort_keys=True)
    path = _cache_file(cache)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        with torch.random.fork_rng(devices=[]):  # the measurement must not move the caller's seeded RNG
            if model is None:
                known[key] = measure_cpu_variants(bf16=info["bf16_native"])
            else:
                v = getattr(model, "visual", model)
                known[key] = measure_cpu_variants(bf16=info["bf16_native"], batch=16, side=_image_side(v), repeats=2,
                                                  net=v)
        from .fileio import atomic_write_text

        try:
            atomic_write_text(path, json.dumps(known, indent=1))
        except OSError:  # a read-only cache only costs the measurement next time
            pass
    return known[key]


def _choose(t: dict, info: dict, path: Path, what: str) -> Precision:
    cl = t["fp32_cl"] * _MIN_SPEEDUP_LAYOUT <= t["fp32"]
    best_fp32 = min(t["fp32"], t["fp32_cl"])
    measured = (f"measured{what} (cached in {path}): fp32 {1e3 * t['fp32']:.0f} ms, fp32 channels-last "
                f"{1e3 * t['fp32_cl']:.0f} ms")
    if "bf16_cl" in t:
        measured += f", bf16 {1e3 * t['bf16_cl']:.0f} ms"
        if t["bf16_cl"] * _MIN_SPEEDUP <= best_fp32:
            return Precision("bf16", f"CPU '{info['model']}' has native bf16; {measured}", channels_last=True)
        return Precision("fp32", f"CPU '{info['model']}' has native bf16 but it measured no faster; {measured}",
                         channels_last=cl)
    return Precision("fp32", f"CPU '{info['model']}' has no native bf16 ({'/'.join(_BF16_FLAGS)}: bf16 autocast "
                             f"would be emulated and many times slower); {measured}", channels_last=cl)


@lru_cache(maxsize=8)
def _cpu_choice(cache: str | None) -> Precision:
    return _choose(measured_cpu_variants(cache), cpu_info(), _cache_file(cache), "")


_MODEL_CHOICES: dict = {}


def _cpu_model_choice(cache: str | None, model: torch.nn.Module) -> Precision:
    """The per-model choice: only on CPUs with native bf16 (elsewhere bf16 is never tried) the model's own image
    tower is timed, as bf16 helps conv towers there and slows small ViTs (measured: 2x faster and 1.8x slower)."""
    machine = _cpu_choice(cache)
    if not cpu_info()["bf16_native"]:
        return machine
    key = (cache, model_signature(model))
    if key not in _MODEL_CHOICES:
        _MODEL_CHOICES[key] = _choose(measured_cpu_variants(cache, model), cpu_info(), _cache_file(cache),
                                      f" for this model's image tower ({model_signature(model)})")
    return _MODEL_CHOICES[key]


def resolve_precision(setting: str = "auto", device: torch.device | str | None = None,
                      cache: str | Path | None = None, model: torch.nn.Module | None = None) -> Precision:
    """The precision to run with on ``device`` (None: cuda if available, else cpu). See the module docstring.
    ``model``: on a CPU with native bf16, the choice is measured on that model's image tower (cached per model)."""
    check_precision(setting)
    if setting == "auto":
        setting = check_precision(os.environ.get("CLIPWB_PRECISION", "auto") or "auto")
        if setting != "auto":
            return Precision(setting, "set by CLIPWB_PRECISION", channels_last=setting == "bf16")
    else:
        return Precision(setting, "set in the config", channels_last=setting == "bf16")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return Precision("bf16" if ok else "fp32", "CUDA device " + ("with" if ok else "without") + " bf16 support",
                         channels_last=True)
    if dev.type == "cpu":
        return _cpu_choice(str(_cache_file(cache))) if model is None else _cpu_model_choice(str(_cache_file(cache)),
                                                                                          model)
    return Precision("fp32", f"device type {dev.type}: fp32")


def describe(setting: str = "auto", device: torch.device | str | None = None) -> dict:
    """What metrics files record: the resolved precision, why, and the machine it was resolved on."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    p = resolve_precision(setting, dev)
    out = {"precision": p.name, "channels_last": p.channels_last, "precision_reason": p.reason, "device": str(dev),
           "cpu": cpu_info()["model"],
           "cpu_bf16_native": cpu_info()["bf16_native"], "torch": torch.__version__}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out
