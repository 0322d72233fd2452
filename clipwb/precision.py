"""Numeric precision of training and feature extraction, chosen per machine by capability and measurement.

``precision="auto"`` (the default of every config) resolves to

- ``bf16`` (bf16 autocast + channels-last) on CUDA devices that support bf16;
- on CPUs: ``fp32`` unless the CPU has native bf16 (``avx512_bf16`` or ``amx_bf16`` in its flags); where it
  has, a one-time micro-benchmark (a small conv net, forward + backward, fp32 vs bf16 autocast) decides, and its
  result is cached per machine (CPU model, flags, torch version, threads) in ``<clipwb cache>/precision.json``.
  On CPUs without native bf16, autocast emulates bf16 and runs about 20x slower than fp32 (measured on a 2-core
  AMD EPYC with AVX2 only), so fp32 is the only sensible choice there;
- ``fp32`` on any other device.

``bf16`` and ``fp32`` force a precision; ``CLIPWB_PRECISION`` (same values) overrides ``auto`` for a whole run.
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
# bf16 must be at least this much faster than fp32 in the micro-benchmark to be chosen
_MIN_SPEEDUP = 1.1


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16" or "fp32"
    reason: str  # why auto chose it (or "forced")

    @property
    def autocast(self) -> bool:
        return self.name == "bf16"

    @property
    def channels_last(self) -> bool:  # pays off together with bf16 kernels only
        return self.name == "bf16"

    def autocast_ctx(self, device: torch.device | str):
        dev = torch.device(device).type
        return torch.autocast(dev, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def to_dict(self) -> dict:
        return asdict(self)


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


def _bench_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 48, 3, stride=2, padding=1), torch.nn.GELU(),
        torch.nn.Conv2d(48, 96, 3, stride=2, padding=1), torch.nn.GELU(),
        torch.nn.Conv2d(96, 96, 3, padding=1), torch.nn.GELU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(96, 256), torch.nn.GELU(),
        torch.nn.Linear(256, 128))


def measure_bf16_speedup(batch: int = 64, side: int = 64, repeats: int = 3) -> dict:
    """fp32 seconds / bf16-autocast seconds of a small conv net's forward + backward on the CPU (interleaved,
    median of ``repeats``)."""
    x = torch.randn(batch, 3, side, side)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    nets = {"fp32": _bench_net(), "bf16": _bench_net().to(memory_format=torch.channels_last)}
    inputs = {"fp32": x, "bf16": x.contiguous(memory_format=torch.channels_last)}
    for r in range(repeats + 1):  # the first round warms up
        for name in ("fp32", "bf16"):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                out = nets[name](inputs[name])
            out.float().square().mean().backward()
            if r:
                times[name].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"fp32_s": med["fp32"], "bf16_s": med["bf16"], "speedup": med["fp32"] / med["bf16"]}


def _cache_file(cache: str | Path | None) -> Path:
    return Path(cache or os.environ.get("CLIPWB_CACHE") or Path.home() / ".cache" / "clipwb") / "precision.json"


def _cpu_choice(cache: str | Path | None) -> Precision:
    info = cpu_info()
    if not info["bf16_native"]:
        return Precision("fp32", f"CPU '{info['model']}' has no native bf16 ({'/'.join(_BF16_FLAGS)}): bf16 "
                                 f"autocast would be emulated and many times slower")
    key = json.dumps([info, torch.__version__], sort_keys=True)
    path = _cache_file(cache)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        known[key] = measure_bf16_speedup()
        from .io import atomic_write_text

        try:
            atomic_write_text(path, json.dumps(known, indent=1))
        except OSError:  # a read-only cache only costs the measurement next time
            pass
    speedup = float(known[key]["speedup"])
    name = "bf16" if speedup >= _MIN_SPEEDUP else "fp32"
    return Precision(name, f"CPU '{info['model']}' has native bf16; measured bf16 autocast {speedup:.2f}x "
                           f"as fast as fp32 (cached in {path})")


def resolve_precision(setting: str = "auto", device: torch.device | str | None = None,
                      cache: str | Path | None = None) -> Precision:
    """The precision to run with on ``device`` (None: cuda if available, else cpu). See the module docstring."""
    check_precision(setting)
    if setting == "auto":
        setting = check_precision(os.environ.get("CLIPWB_PRECISION", "auto") or "auto")
        if setting != "auto":
            return Precision(setting, "set by CLIPWB_PRECISION")
    else:
        return Precision(setting, "set in the config")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return Precision("bf16" if ok else "fp32", "CUDA device " + ("with" if ok else "without") + " bf16 support")
    if dev.type == "cpu":
        return _cpu_choice(cache)
    return Precision("fp32", f"device type {dev.type}: fp32")


def describe(setting: str = "auto", device: torch.device | str | None = None) -> dict:
    """What metrics files record: the resolved precision, why, and the machine it was resolved on."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    p = resolve_precision(setting, dev)
    out = {"precision": p.name, "precision_reason": p.reason, "device": str(dev), "cpu": cpu_info()["model"],
           "cpu_bf16_native": cpu_info()["bf16_native"], "torch": torch.__version__}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out
