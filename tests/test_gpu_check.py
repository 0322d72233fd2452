"""scripts/gpu_check.sh: without CUDA it says so and exits 0; its summary table reads the steps' figures."""
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


def _module():
    return load_benchmark("gpu_check")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU branch")
def test_gpu_check_without_cuda_says_so_and_exits_0():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert "no CUDA GPU on this machine" in r.stdout and "scripts/test.sh" in r.stdout


def test_the_summary_table_names_every_step_and_the_po_step_figures():
    mod = _module()
    res = {"seconds": 400.0, "steps": {
        "tests": {"rc": 0, "seconds": 60.0},
        "po_step": {"rc": 0, "seconds": 120.0, "img_per_s": {"ours": 10000.0}, "mfu": {"ours": 0.2},
                    "ratios": {"ours_vs_floor": 0.95, "ours_vs_floor_compiled": 0.91}},
        "torchrun": {"rc": 1, "seconds": 30.0},
        "pretrain": {"skipped": True, "rc": 0, "seconds": 0}}}
    table = mod.summary_table(res)
    assert "| po_step | ok | 120 | ours 10000 img/s, 0.91x the compiled floor, 0.95x the eager floor, MFU 20.0 % |" \
        in table
    assert "| torchrun | FAILED (rc 1) | 30 |" in table and "| pretrain | skipped |" in table
    assert "**400**" in table


def test_the_steps_use_two_processes_only_where_two_gpus_exist(tmp_path):
    mod = _module()
    one = mod._steps("py", tmp_path, 1, tmp_path / "po.json")
    two = mod._steps("py", tmp_path, 4, tmp_path / "po.json")
    assert one["torchrun"][0][one["torchrun"][0].index("--nproc_per_node") + 1] == "1"
    assert two["torchrun"][0][two["torchrun"][0].index("--nproc_per_node") + 1] == "2"
    assert "ViT-B-32" in one["po_step"][0] and "512" in one["po_step"][0]
    assert sum(t for _, t in one.values()) > 0 and set(one) == set(mod.STEPS)
