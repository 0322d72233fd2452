#!/usr/bin/env bash
# Checks the GPU path in one command (benchmarks/gpu_check.py): the gpu tests, the PO step of ViT-B/32 at batch 512
# against the compiled floor, torchrun with NCCL, pretraining on CUDA and the quick main job on CUDA; writes
# benchmarks/results/gpu_<device>.json and prints a summary table. Without a CUDA GPU it says so and exits 0.
# Uses ./.venv where it exists, else a python3 that already has torch and open_clip (a GPU machine's own), else
# builds ./.venv (scripts/env.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
elif python3 -c "import torch, open_clip, papermill" >/dev/null 2>&1; then
    PY=python3
else
    source "$ROOT/scripts/env.sh"
    PY="$ROOT/.venv/bin/python"
fi
export HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
