"""One run cache for every experiment kind: a result is stored under ``<cache>/runs/<kind>-<key>.<ext>``, the key a
hash of everything that determines it (config, model weights, data), written atomically, reused on the next run.

JSON results (``cached_json``) and tensors (``cached_tensors``, safetensors) are supported; ``fingerprint``
hashes what a config hash cannot see: a model's parameters and buffers, arrays of data."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from .config import config_hash
from .fileio import atomic_write, atomic_write_text, cache_dir


def run_dir(cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / "runs"


def fingerprint(*objs) -> str:
    """SHA-1 of the content of models (state dicts), tensors, arrays and nested dicts / lists of them, in a fixed
    order; arrays on disk by the content digest they carry (``fingerprint_token()``); other values by their repr."""
    h = hashlib.sha1()

    def feed(o):
        if hasattr(o, "fingerprint_token"):  # data on disk (clipwb.data.store.DiskArray): its content digest
            h.update(f"F{o.fingerprint_token()}".encode())
        elif isinstance(o, torch.nn.Module):
            feed(o.state_dict())
        elif isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, np.ndarray):
            a = np.ascontiguousarray(o)
            h.update(f"A{a.dtype}{a.shape}".encode())
            h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
        elif isinstance(o, Mapping):
            for k in sorted(o, key=str):
                h.update(f"K{k}".encode())
                feed(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"L{len(o)}".encode())
            for x in o:
                feed(x)
        else:
            h.update(repr(o).encode())

    for o in objs:
        feed(o)
    return h.hexdigest()[:16]


def cached_json(kind: str, key_parts, compute: Callable[[], dict], cache: str | Path | None = None,
                enabled: bool = True) -> dict:
    """``compute()`` once per key; later calls with the same ``key_parts`` read the stored JSON."""
    if not enabled:
        return compute()
    path = run_dir(cache) / f"{kind}-{config_hash(kind, key_parts)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    res = compute()
    atomic_write_text(path, json.dumps(res))
    return res


def cached_tensors(kind: str, key_parts, compute: Callable[[], dict[str, torch.Tensor]],
                   cache: str | Path | None = None, enabled: bool = True) -> dict[str, torch.Tensor]:
    """As ``cached_json`` for a dict of tensors (stored with safetensors, read back on the CPU)."""
    from safetensors.torch import load_file, save_file

    if not enabled:
        return compute()
    path = run_dir(cache) / f"{kind}-{config_hash(kind, key_parts)}.safetensors"
    if path.is_file():
        return load_file(str(path))
    res = compute()
    atomic_write(path, lambda tmp: save_file({k: v.detach().cpu().contiguous() for k, v in res.items()}, tmp))
    return res
