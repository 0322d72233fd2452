"""Precision chosen per machine: fp32 on CPUs without native bf16, a cached measurement where they have it, bf16 on
CUDA; the choice is recorded in run logs and metrics."""
import json

import pytest
import torch

import clipwb.precision as P


def test_this_cpu_gets_what_its_flags_allow():
    info = P.cpu_info()
    assert info["model"] and isinstance(info["bf16_native"], bool)
    p = P.resolve_precision("auto", "cpu")
    if not info["bf16_native"]:
        assert p.name == "fp32" and not p.autocast and not p.channels_last and "no native bf16" in p.reason
    else:
        assert p.name in ("bf16", "fp32") and "measured" in p.reason


def test_forced_settings_and_the_environment_override(monkeypatch):
    assert P.resolve_precision("bf16", "cpu").autocast and P.resolve_precision("fp32", "cpu").name == "fp32"
    monkeypatch.setenv("CLIPWB_PRECISION", "bf16")
    assert P.resolve_precision("auto", "cpu") == P.Precision("bf16", "set by CLIPWB_PRECISION")
    monkeypatch.setenv("CLIPWB_PRECISION", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("auto", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("half", "cpu")


@pytest.mark.parametrize("speedup,expect", [(2.0, "bf16"), (0.05, "fp32")])
def test_a_native_bf16_cpu_is_measured_once_and_cached(monkeypatch, tmp_path, speedup, expect):
    calls = []
    monkeypatch.setattr(P, "cpu_info", lambda: {"model": "Test CPU", "flags": ["avx512_bf16"], "bf16_native": True,
                                                "threads": 2})
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda: calls.append(1) or {"fp32_s": 1.0, "bf16_s": 1 / speedup,
                                                                                "speedup": speedup})
    monkeypatch.delenv("CLIPWB_PRECISION", raising=False)
    a = P.resolve_precision("auto", "cpu", cache=tmp_path)
    b = P.resolve_precision("auto", "cpu", cache=tmp_path)
    assert a.name == b.name == expect and len(calls) == 1
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert len(cached) == 1 and next(iter(cached.values()))["speedup"] == speedup


def test_the_micro_benchmark_measures_both_precisions():
    r = P.measure_bf16_speedup(batch=4, side=16, repeats=1)
    assert r["fp32_s"] > 0 and r["bf16_s"] > 0 and r["speedup"] == pytest.approx(r["fp32_s"] / r["bf16_s"])


def test_autocast_context_follows_the_choice():
    x = torch.randn(4, 4)
    with P.Precision("bf16", "t").autocast_ctx("cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with P.Precision("fp32", "t").autocast_ctx("cpu"):
        assert (x @ x).dtype == torch.float32


def test_metrics_and_po_runs_record_the_precision(tmp_path, tiny):
    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.reports import write_metrics
    from clipwb.training.po_trainer import POConfig, train_po
    from clipwb.world import World

    m = json.loads(write_metrics(tmp_path, "99_x", {"a": 1}).read_text())
    assert m["a"] == 1 and m["machine"]["precision"] == P.resolve_precision("auto").name
    assert m["machine"]["cpu"] == P.cpu_info()["model"] and m["machine"]["torch"] == torch.__version__
    classes, data, _ = attack_arrays("world", world=World(), n_train=8, n_test=8, cfg=AttackSetsConfig(k=1),
                                     root=tmp_path / "sets", progress=False)
    res = train_po(tiny.model, tiny.tokenizer, classes, data["train"], POConfig(batch_size=8, epochs=1, device="cpu"),
                   out_dir=tmp_path / "run", progress=False, save=False)
    assert res.precision == P.resolve_precision("auto", "cpu").to_dict()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == res.precision


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gets_bf16_where_supported():
    p = P.resolve_precision("auto", "cuda")
    assert p.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
