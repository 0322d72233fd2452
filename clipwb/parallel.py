"""Independent runs of an experiment grid in parallel processes.

``pmap(fn, items)`` calls ``fn(item)`` for every item, in ``workers`` forked processes (default: the CPU count,
or ``CLIPWB_WORKERS``), and returns the results in order. Every call runs with one torch thread, in the workers
and in the sequential fallback alike, so a result does not depend on how many workers ran the grid (the float
summation order of a multi-threaded kernel would). Small runs (the GCA encoders, the MMCL linear models) use a
second core far better as a second run than as a second thread of the same run.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

_TASK: tuple[Callable, list] | None = None


def default_workers() -> int:
    env = os.environ.get("CLIPWB_WORKERS", "")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"CLIPWB_WORKERS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"CLIPWB_WORKERS must be >= 1, got {n}")
        return n
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _one_thread() -> None:
    torch.set_num_threads(1)


def _call(i: int):
    fn, items = _TASK
    return fn(items[i])


def pmap(fn: Callable[[Any], Any], items: Iterable, workers: int | None = None, progress: bool = True,
         desc: str | None = None) -> list:
    """[fn(x) for x in items], in parallel processes; see the module docstring."""
    global _TASK
    from .progress import tqdm

    items = list(items)
    workers = min(default_workers() if workers is None else workers, len(items))
    if workers <= 1 or mp.current_process().daemon:  # nested inside a worker: run here
        threads = torch.get_num_threads()
        _one_thread()
        try:
            return [fn(x) for x in tqdm(items, disable=not progress, desc=desc)]
        finally:
            torch.set_num_threads(threads)
    _TASK = (fn, items)
    try:
        with mp.get_context("fork").Pool(workers, initializer=_one_thread) as pool:
            return list(tqdm(pool.imap(_call, range(len(items))), total=len(items), disable=not progress,
                             desc=desc))
    finally:
        _TASK = None


def distributed_backend(device) -> str:
    """The torch.distributed backend for a run that trains on ``device``: gloo on the CPU (whatever else the machine
    has: a CUDA host training on the CPU must not get NCCL, which has no CPU tensors), and on CUDA NCCL for CUDA
    tensors with gloo beside it for any CPU tensor a collective meets ("cpu:gloo,cuda:nccl")."""
    device = torch.device(device)
    if device.type == "cuda":
        return "cpu:gloo,cuda:nccl"
    if device.type == "cpu":
        return "gloo"
    raise ValueError(f"no distributed backend for device {device}: train on cpu or cuda")
