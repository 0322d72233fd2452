"""One command that checks the GPU path (``bash scripts/gpu_check.sh``), in at most 8 minutes on one H100/H200:

1. the ``gpu``-marked tests (bf16 against fp32, resume on CUDA, torchrun with NCCL, pretraining on CUDA);
2. ``benchmarks/po_step.py`` for ViT-B/32 at batch 512 in bf16: our PO step, the eager floor, the compiled floor and
   the MFU (the weights are randomly initialised where none are cached: a step's time does not depend on them);
3. ``torchrun`` with NCCL: 2 processes where 2 GPUs exist, else 1, a short ``train-po``;
4. a short pretraining of the tiny CLIP on CUDA (300 steps of the quick profile's data);
5. the main job in the quick profile on CUDA (every notebook, into a temporary folder).

Each step's seconds, exit status and key figures go to ``benchmarks/results/gpu_<device>.json``, and one summary
table is printed. Without a CUDA GPU it says so and exits 0 (the CPU path is what ``scripts/test.sh`` checks).

    python benchmarks/gpu_check.py [--skip STEP ...] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STEPS = ("tests", "po_step", "torchrun", "pretrain", "main_job")
BUDGET_S = 8 * 60


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "gpu"


def _run(name: str, cmd: list[str], timeout: int, env: dict) -> dict:
    print(f"[gpu_check] {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = r.returncode, (r.stdout + r.stderr)
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"timed out after {timeout} s\n" + ((e.stdout or b"").decode(errors="replace") if
                                                           isinstance(e.stdout, bytes) else (e.stdout or ""))
    secs = time.time() - t0
    print(f"[gpu_check] {name}: rc {rc} in {secs:.0f} s", flush=True)
    if rc:
        print(out[-3000:], flush=True)
    return {"rc": rc, "seconds": round(secs, 1), "tail": out[-1500:]}


def _steps(py: str, tmp: Path, n_gpus: int, po_out: Path) -> dict[str, tuple[list[str], int]]:
    cfg = tmp / "po.yaml"
    cfg.write_text("batch_size: 64\nepochs: 1\nlr: 0.0001\ndevice: cuda\n")
    pre = tmp / "pretrain.yaml"
    pre.write_text("steps: 300\nn_images: 8192\nbatch_size: 128\neval_every: 0\ndevice: cuda\n")
    nproc = min(2, n_gpus)
    return {
        "tests": ([py, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider"], 240),
        "po_step": ([py, "benchmarks/po_step.py", "--model", "ViT-B-32", "--batch", "512", "--steps", "8",
                     "--rounds", "2", "--precision", "bf16", "--compile-floor", "on", "--out", str(po_out)], 300),
        "torchrun": ([py, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", "29561",
                      "-m", "clipwb", "train-po", "--method", "dpo", "--config", str(cfg), "--n-train", "256",
                      "--n-test", "64", "--k", "2", "--no-progress", "--out", str(tmp / "torchrun")], 180),
        "pretrain": ([py, "-m", "clipwb", "pretrain", "--profile", "quick", "--config", str(pre), "--force",
                      "--cache-dir", str(tmp / "cache"), "--no-progress"], 180),
        "main_job": ([py, "-m", "clipwb", "report", "--profile", "quick", "--out", str(tmp / "reports"),
                      "--no-progress"], 420),
    }


def _figures(step: str, res: dict, po_out: Path) -> dict:
    """The key figures of a finished step, read from what it wrote."""
    if step == "po_step" and po_out.is_file():
        b = json.loads(po_out.read_text())
        return {"img_per_s": b["img_per_s"], "ratios": b["ratios"], "mfu": b["mfu"], "compiled": b["compiled"]}
    if step in ("torchrun", "pretrain") and res["rc"] == 0:
        try:
            return {"result": json.loads(res["tail"].strip().splitlines()[-1])}
        except (ValueError, IndexError):
            return {}
    return {}


def summary_table(results: dict) -> str:
    """The printed summary: one row per step (status, seconds, key figure)."""
    rows = ["| step | status | seconds | figure |", "|---|---|---|---|"]
    for step, r in results["steps"].items():
        fig = ""
        if step == "po_step" and r.get("ratios"):
            ips, ratios, mfu = r["img_per_s"], r["ratios"], r.get("mfu") or {}
            fig = (f"ours {ips['ours']:.0f} img/s, {ratios.get('ours_vs_floor_compiled', float('nan')):.2f}x the "
                   f"compiled floor, {ratios['ours_vs_floor']:.2f}x the eager floor"
                   + (f", MFU {100 * mfu['ours']:.1f} %" if mfu.get("ours") else ""))
        status = "skipped" if r.get("skipped") else ("ok" if r["rc"] == 0 else f"FAILED (rc {r['rc']})")
        rows.append(f"| {step} | {status} | {r.get('seconds', 0):.0f} | {fig} |")
    rows.append(f"| **total** | | **{results['seconds']:.0f}** | budget {BUDGET_S} s |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to leave out")
    ap.add_argument("--keep", default=None, help="keep the runs' outputs in this folder (default: a temp dir)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("[gpu_check] no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check here. "
              "Run this on a machine with one or more CUDA GPUs; the CPU path is checked by bash scripts/test.sh.")
        return 0
    n_gpus, name = torch.cuda.device_count(), torch.cuda.get_device_name(0)
    print(f"[gpu_check] {n_gpus} x {name}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="clipwb-gpu-check-"))
    tmp.mkdir(parents=True, exist_ok=True)
    env.setdefault("CLIPWB_CACHE", str(tmp / "cache"))
    po_out = RESULTS / f"po_step_{_slug(name)}_bf16.json"
    results = {"device": name, "n_gpus": n_gpus, "torch": torch.__version__, "cuda": torch.version.cuda,
               "steps": {}, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    t0 = time.time()
    for step, (cmd, timeout) in _steps(sys.executable, tmp, n_gpus, po_out).items():
        if step in args.skip:
            results["steps"][step] = {"skipped": True, "rc": 0, "seconds": 0}
            continue
        res = _run(step, cmd, timeout, env)
        results["steps"][step] = {**res, **_figures(step, res, po_out)}
    results["seconds"] = round(time.time() - t0, 1)
    results["within_budget"] = results["seconds"] <= BUDGET_S
    out = RESULTS / f"gpu_{_slug(name)}.json"
    from clipwb.fileio import atomic_write_text

    atomic_write_text(out, json.dumps(results, indent=2))
    print(summary_table(results))
    print(f"[gpu_check] wrote {out}")
    return 0 if all(r["rc"] == 0 for r in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
