"""One run cache for every experiment kind: a result is stored under ``<cache>/runs/<kind>-<key>.<ext>``, the key a
hash of everything that determines it (config, model weights, data), written atomically, reused on the next run.

JSON results (``cached_json``) and tensors (``cached_tensors``, safetensors) are supported; ``fingerprint``
hashes what a config hash cannot see: a model's parameters and buffers, arrays of data.

Every entry carries a digest of its content (a header line of JSON entries, the metadata of safetensors ones),
checked when it is read: an entry that is truncated, emptied, garbage or changed in place is named in one warning
line, discarded and recomputed, so one broken file never breaks every later run. ``entries``, ``verify`` and
``clear`` (and ``clipwb cache list|verify|clear``) show and prune what is there."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import config_hash
from .fileio import atomic_write, cache_dir


def run_dir(cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / "runs"


def fingerprint(*objs) -> str:
    """SHA-1 of the content of models (state dicts, and forward hooks that carry a ``fingerprint_token``), tensors, arrays and nested dicts / lists of them, in a fixed
    order; arrays on disk by the content digest they carry (``fingerprint_token()``); other values by their repr."""
    h = hashlib.sha1()

    def feed(o):
        if hasattr(o, "fingerprint_token"):  # data on disk (clipwb.data.store.DiskArray): its content digest
            h.update(f"F{o.fingerprint_token()}".encode())
        elif isinstance(o, torch.nn.Module):
            feed(o.state_dict())
            # hooks that change the forward without a weight (a head's class-token contribution removed) say so
            for name, m in o.named_modules():
                for hk in (*m._forward_pre_hooks.values(), *m._forward_hooks.values()):
                    if hasattr(hk, "fingerprint_token"):
                        h.update(f"H{name}{hk.fingerprint_token()}".encode())
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


# -- entries: every file carries a digest of its content, checked when read ----------------------------------
FORMAT = 1
log = logging.getLogger("clipwb.cache")


class CacheEntryError(ValueError):
    """A cache entry that cannot be read or does not match its digest (truncated, emptied, changed in place)."""


def _digest(*chunks: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_json_entry(path: Path, kind: str, result) -> None:
    """A JSON entry: one header line (format, kind, digest of the payload, creation time), then the payload."""
    payload = json.dumps(result).encode()
    header = {"clipwb_cache": FORMAT, "kind": kind, "digest": _digest(payload), "created": time.time()}
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(json.dumps(header).encode() + b"\n" + payload))


def read_json_entry(path: Path):
    raw = Path(path).read_bytes()
    head, sep, payload = raw.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        header = None
    if not sep or not isinstance(header, dict) or header.get("clipwb_cache") != FORMAT or "digest" not in header:
        raise CacheEntryError("no clipwb cache header (empty, truncated, garbage, or written before entries carried "
                              "a digest)")
    if _digest(payload) != header["digest"]:
        raise CacheEntryError("its content does not match its digest (truncated or changed)")
    return json.loads(payload)


def write_tensor_entry(path: Path, kind: str, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    t = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"clipwb_cache": str(FORMAT), "kind": kind, "digest": _tensor_digest(t), "created": repr(time.time())}
    atomic_write(path, lambda tmp: save_file(t, tmp, metadata=meta))


def read_tensor_entry(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors' errors of a truncated or foreign file
        raise CacheEntryError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})") \
            from None
    if meta.get("clipwb_cache") != str(FORMAT) or "digest" not in meta:
        raise CacheEntryError("no clipwb cache metadata (written before entries carried a digest, or not ours)")
    if _tensor_digest(tensors) != meta["digest"]:
        raise CacheEntryError("its content does not match its digest (changed in place)")
    return tensors


READERS = {".json": read_json_entry, ".safetensors": read_tensor_entry}
_MISSING = object()


def _read_or_discard(path: Path, reader):
    """The entry's content, or ``_MISSING`` when there is none or it is broken: a broken entry is named in one
    warning line and removed, so that the caller recomputes and rewrites it."""
    if not path.is_file():
        return _MISSING
    try:
        return reader(path)
    except (CacheEntryError, OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("clipwb cache: discarded %s (%s); recomputing it", path, e)
        path.unlink(missing_ok=True)
        return _MISSING


def cached_json(kind: str, key_parts, compute: Callable[[], dict], cache: str | Path | None = None,
                enabled: bool = True) -> dict:
    """``compute()`` once per key; later calls with the same ``key_parts`` read the stored JSON (checked against its
    digest; a broken entry is discarded with a warning and recomputed)."""
    if not enabled:
        return compute()
    path = run_dir(cache) / f"{kind}-{config_hash(kind, key_parts)}.json"
    got = _read_or_discard(path, read_json_entry)
    if got is not _MISSING:
        return got
    res = compute()
    write_json_entry(path, kind, res)
    return res


def cached_tensors(kind: str, key_parts, compute: Callable[[], dict[str, torch.Tensor]],
                   cache: str | Path | None = None, enabled: bool = True) -> dict[str, torch.Tensor]:
    """As ``cached_json`` for a dict of tensors (stored with safetensors and a digest, read back on the CPU)."""
    if not enabled:
        return compute()
    path = run_dir(cache) / f"{kind}-{config_hash(kind, key_parts)}.safetensors"
    got = _read_or_discard(path, read_tensor_entry)
    if got is not _MISSING:
        return got
    res = compute()
    write_tensor_entry(path, kind, res)
    return res


# -- what is there: list, verify, clear ------------------------------------------------------------------------
@dataclass
class Entry:
    path: Path
    kind: str
    size: int
    mtime: float


def entries(cache: str | Path | None = None, kind: str | None = None) -> list[Entry]:
    """The run cache's entries (``<kind>-<key>.json|safetensors``), oldest first; ``kind`` selects one kind."""
    root = run_dir(cache)
    out = []
    for p in sorted(root.glob("*")) if root.is_dir() else []:
        if p.name.startswith(".") or p.suffix not in READERS or not p.is_file():
            continue
        k = p.stem.rsplit("-", 1)[0]
        if kind is None or k == kind:
            st = p.stat()
            out.append(Entry(p, k, st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: (e.mtime, e.path.name))


def verify(entry: Entry) -> str | None:
    """None if the entry reads and matches its digest, else why not."""
    try:
        READERS[entry.path.suffix](entry.path)
    except (CacheEntryError, OSError, ValueError, UnicodeDecodeError) as e:
        return str(e)
    return None


def stale_temp_files(cache: str | Path | None = None) -> list[Path]:
    """Temp files of writes that were interrupted (``.<name>.<random>.tmp``)."""
    root = run_dir(cache)
    return sorted(p for p in root.glob(".*.tmp") if p.is_file()) if root.is_dir() else []


def clear(cache: str | Path | None = None, kind: str | None = None, older_than: float | None = None,
          bad: bool = False) -> list[Path]:
    """Remove the entries of ``kind``, or older than ``older_than`` seconds, or (``bad``) those that fail
    ``verify``, the conditions combined; interrupted writes' temp files go too. Returns the removed paths."""
    now, removed = time.time(), []
    for e in entries(cache, kind):
        if older_than is not None and now - e.mtime < older_than:
            continue
        if bad and verify(e) is None:
            continue
        e.path.unlink(missing_ok=True)
        removed.append(e.path)
    for p in stale_temp_files(cache):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
