"""The CUDA path: bf16 against fp32, torchrun with NCCL, resume and pretraining on a GPU. Marked ``gpu`` and skipped
with the reason on machines without CUDA; on a GPU host run them with ``bash scripts/test.sh -m gpu``."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipwb.data.sets import AttackSetsConfig, attack_arrays
from clipwb.precision import Precision
from clipwb.training.po_trainer import POConfig, reference_logprobs, train_po
from clipwb.world import World

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device: run on a GPU host with bash scripts/test.sh -m gpu")]


@pytest.fixture(scope="module")
def cuda_tiny():
    from clipwb.models import load_model

    return load_model("tiny", "cuda")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    classes, data, _ = attack_arrays("world", world=World(), n_train=64, n_test=16, cfg=AttackSetsConfig(k=2),
                                     root=tmp_path_factory.mktemp("sets"), progress=False)
    return classes, data


def _cfg(**kw):
    return POConfig(**{**dict(method="dpo", lr=1e-4, batch_size=32, epochs=1, device="cuda", precision="fp32"), **kw})


def _distance(a, b, keys) -> float:
    return sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in keys) ** 0.5


def test_bf16_matches_fp32_within_tolerance(cuda_tiny, small):
    """bf16 autocast (8 mantissa bits) against fp32 on CUDA: reference probabilities within 0.03, the losses of
    a 4-step run within 5 %, the weights within 20 % of the distance they travelled."""
    classes, data = small
    m, tok = cuda_tiny.model, cuda_tiny.tokenizer
    p32 = reference_logprobs(m, tok, classes, data["train"]["typo"][:64], precision=Precision("fp32", "test")).exp()
    p16 = reference_logprobs(m, tok, classes, data["train"]["typo"][:64], precision=Precision("bf16", "test")).exp()
    assert float((p32 - p16).abs().max()) < 0.03
    a = train_po(m, tok, classes, data["train"], _cfg(precision="fp32"), progress=False)
    b = train_po(m, tok, classes, data["train"], _cfg(precision="bf16"), progress=False)
    assert b.precision["name"] == "bf16" and a.precision["name"] == "fp32"
    np.testing.assert_allclose([r["loss"] for r in b.log], [r["loss"] for r in a.log], rtol=0.05)
    w0 = {k: v for k, v in m.state_dict().items() if v.is_floating_point()}
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert _distance(wa, wb, w0) < 0.2 * _distance(wa, w0, w0)


def test_resume_on_cuda_gives_the_uninterrupted_weights(cuda_tiny, small, tmp_path):
    classes, data = small
    cfg = _cfg(epochs=2, checkpoint_every=2)
    ref = train_po(cuda_tiny.model, cuda_tiny.tokenizer, classes, data["train"], cfg, out_dir=tmp_path / "ref",
                   progress=False)

    class Killed(Exception):
        pass

    def die(step, row):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train_po(cuda_tiny.model, cuda_tiny.tokenizer, classes, data["train"], cfg, out_dir=tmp_path / "run",
                 progress=False, on_step=die)
    res = train_po(cuda_tiny.model, cuda_tiny.tokenizer, classes, data["train"], cfg, out_dir=tmp_path / "run",
                   resume=True, progress=False)
    assert res.steps == ref.steps == 8
    # cuDNN may pick other convolution algorithms in a new run: equal up to float rounding, not bit for bit
    for a, b in ((ref.model, res.model), (ref.avg_model, res.avg_model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-4, atol=1e-5) for k in sa)
    np.testing.assert_allclose([r["loss"] for r in res.log], [r["loss"] for r in ref.log], rtol=1e-4)


def test_torchrun_with_nccl_trains_one_process(tmp_path):
    from clipwb.parallel import distributed_backend

    assert "nccl" in distributed_backend(torch.device("cuda"))
    cfg = tmp_path / "po.yaml"
    cfg.write_text("batch_size: 16\nepochs: 1\nlr: 0.0001\ndevice: cuda\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                        "29541", "-m", "clipwb", "train-po", "--method", "kto", "--config", str(cfg), "--n-train", "32",
                        "--n-test", "16", "--k", "2", "--no-progress", "--out", str(tmp_path / "run")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["steps"] == 4 and 0 <= out["raw"]["typo_top1"] <= 1
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["steps"] == 4 and (tmp_path / "run" / "raw" / "open_clip_model.safetensors").is_file()


def test_pretraining_runs_on_cuda_and_learns():
    import math

    from clipwb.training.pretrain import pretrain, pretrain_config

    m, log = pretrain(pretrain_config("quick", steps=40, lr=2e-3, warmup=5, device="cuda"), progress=False)
    assert next(m.parameters()).device.type == "cuda"
    first, last = sum(log["loss"][:5]) / 5, sum(log["loss"][-5:]) / 5
    assert all(math.isfinite(v) for v in log["loss"]) and last < first - 0.2, (first, last)
