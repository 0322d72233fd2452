"""Precision chosen per machine: fp32 on CPUs without native bf16, a cached measurement where they have it, bf16 on
CUDA; the choice is recorded in run logs and metrics."""
import json

import pytest
import torch

import clipwb.precision as P


def test_this_cpu_gets_what_its_flags_allow(tmp_path):
    info = P.cpu_info()
    assert info["model"] and isinstance(info["bf16_native"], bool)
    p = P.resolve_precision("auto", "cpu", cache=tmp_path)
    assert "measured" in p.reason and (tmp_path / "precision.json").is_file()
    if not info["bf16_native"]:
        assert p.name == "fp32" and not p.autocast and "no native bf16" in p.reason
    times = next(iter(json.loads((tmp_path / "precision.json").read_text()).values()))
    assert ("bf16_cl" in times) == info["bf16_native"]
    assert p.channels_last == (times["fp32_cl"] * 1.05 <= times["fp32"]) or p.name == "bf16"


def test_forced_settings_and_the_environment_override(monkeypatch):
    assert P.resolve_precision("bf16", "cpu").autocast and P.resolve_precision("fp32", "cpu").name == "fp32"
    assert P.resolve_precision("bf16", "cpu").channels_last and not P.resolve_precision("fp32", "cpu").channels_last
    monkeypatch.setenv("CLIPWB_PRECISION", "bf16")
    assert P.resolve_precision("auto", "cpu") == P.Precision("bf16", "set by CLIPWB_PRECISION", True)
    monkeypatch.setenv("CLIPWB_PRECISION", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("auto", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("half", "cpu")


@pytest.mark.parametrize("native,times,expect", [
    (True, {"fp32": 1.0, "fp32_cl": 0.8, "bf16_cl": 0.4}, ("bf16", True)),
    (True, {"fp32": 1.0, "fp32_cl": 0.8, "bf16_cl": 16.0}, ("fp32", True)),  # emulated bf16: ~20x slower
    (False, {"fp32": 1.0, "fp32_cl": 1.2}, ("fp32", False)),
    (False, {"fp32": 1.0, "fp32_cl": 0.8}, ("fp32", True)),
])
def test_the_cpu_choice_is_measured_once_and_cached(monkeypatch, tmp_path, native, times, expect):
    calls = []
    monkeypatch.setattr(P, "cpu_info", lambda: {"model": "Test CPU", "flags": ["avx512_bf16"] if native else [],
                                                "bf16_native": native, "threads": 2})
    monkeypatch.setattr(P, "measure_cpu_variants", lambda bf16, **kw: calls.append(bf16) or dict(times))
    monkeypatch.delenv("CLIPWB_PRECISION", raising=False)
    P._cpu_choice.cache_clear()
    a = P.resolve_precision("auto", "cpu", cache=tmp_path)
    P._cpu_choice.cache_clear()  # a new process: read from the cache file, not measured again
    b = P.resolve_precision("auto", "cpu", cache=tmp_path)
    P._cpu_choice.cache_clear()
    assert (a.name, a.channels_last) == (b.name, b.channels_last) == expect and calls == [native]
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert list(cached.values()) == [times]


def test_the_micro_benchmark_measures_each_variant():
    for bf16 in (False, True):
        r = P.measure_cpu_variants(bf16=bf16, batch=4, side=16, repeats=1)
        assert set(r) == ({"fp32", "fp32_cl", "bf16_cl"} if bf16 else {"fp32", "fp32_cl"}) and min(r.values()) > 0


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
    auto = P.resolve_precision("auto")
    assert m["a"] == 1 and m["machine"]["precision"] == auto.name and m["machine"]["channels_last"] == auto.channels_last
    assert m["machine"]["cpu"] == P.cpu_info()["model"] and m["machine"]["torch"] == torch.__version__
    classes, data, _ = attack_arrays("world", world=World(), n_train=8, n_test=8, cfg=AttackSetsConfig(k=1),
                                     root=tmp_path / "sets", progress=False)
    res = train_po(tiny.model, tiny.tokenizer, classes, data["train"], POConfig(batch_size=8, epochs=1, device="cpu"),
                   out_dir=tmp_path / "run", progress=False, save=False)
    assert res.precision == P.resolve_precision("auto", "cpu", model=tiny.model).to_dict()  # timed on its tower
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == res.precision


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gets_bf16_where_supported():
    p = P.resolve_precision("auto", "cuda")
    assert p.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


def test_measuring_leaves_the_callers_random_state_alone(tmp_path):
    P._cpu_choice.cache_clear()
    torch.manual_seed(7)
    expect = torch.rand(3)
    torch.manual_seed(7)
    P.resolve_precision("auto", "cpu", cache=tmp_path)  # measures: no cache file yet
    assert (tmp_path / "precision.json").is_file() and torch.equal(torch.rand(3), expect)
    P._cpu_choice.cache_clear()


def test_the_choice_is_timed_per_model_on_cpus_with_native_bf16(monkeypatch, tmp_path):
    """bf16 speeds the conv tower 2x and slows the small ViT 1.8x on the same Xeon: where bf16 is native, a trainer's
    model gets its own timing (cached per model signature); the machine's choice (calibration) is unchanged; CPUs
    without native bf16 never time a model."""
    import open_clip

    from clipwb.models import register_configs

    register_configs()
    conv, vit = open_clip.create_model("clipwb-tiny"), open_clip.create_model("clipwb-tiny-vit")
    assert P.model_signature(conv) != P.model_signature(vit) and P.model_signature(vit).endswith(":64")
    calls = []

    def fake(bf16, net=None, **kw):
        calls.append(type(net).__name__ if net is not None else "machine")
        slow_bf16 = net is not None and type(net).__name__ == "VisionTransformer"
        return {"fp32": 1.0, "fp32_cl": 1.0, **({"bf16_cl": 1.8 if slow_bf16 else 0.5} if bf16 else {})}

    monkeypatch.setattr(P, "measure_cpu_variants", fake)
    monkeypatch.delenv("CLIPWB_PRECISION", raising=False)
    for native, expect in ((True, ("bf16", "bf16", "fp32")), (False, ("fp32", "fp32", "fp32"))):
        monkeypatch.setattr(P, "cpu_info", lambda native=native: {
            "model": "Test CPU", "flags": [], "bf16_native": native, "threads": 2})
        P._cpu_choice.cache_clear()
        P._MODEL_CHOICES.clear()
        calls.clear()
        cache = tmp_path / str(native)
        got = tuple(P.resolve_precision("auto", "cpu", cache=cache, model=m).name for m in (None, conv, vit))
        assert got == expect
        assert calls == (["machine", "ModifiedResNet", "VisionTransformer"] if native else ["machine"])
        if native:
            assert "this model's image tower (VisionTransformer" in P.resolve_precision("auto", "cpu", cache=cache,
                                                                                         model=vit).reason
            P._cpu_choice.cache_clear()
            P._MODEL_CHOICES.clear()  # a new process: read back from precision.json, not timed again
            assert P.resolve_precision("auto", "cpu", cache=cache, model=vit).name == "fp32" and len(calls) == 3
    P._cpu_choice.cache_clear()
    P._MODEL_CHOICES.clear()


def test_a_model_tower_is_timed_for_real():
    import open_clip

    from clipwb.models import register_configs

    register_configs()
    vit = open_clip.create_model("clipwb-tiny-vit")
    before = [p.clone() for p in vit.parameters()]
    r = P.measure_cpu_variants(bf16=False, batch=2, side=64, repeats=1, net=vit.visual)
    assert set(r) == {"fp32", "fp32_cl"} and min(r.values()) > 0
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, vit.parameters()))  # a copy was timed


@pytest.mark.parametrize("flags, tier", [
    (["avx2", "fma"], "avx2"),                              # AMD EPYC Zen 3
    (["avx2", "avx512f", "avx512_bf16", "fma"], "avx512-bf16"),  # AMD EPYC Zen 4
    (["avx2", "avx512f", "fma"], "avx512"),
    (["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"], "amx"),
    ([], ""),
])
def test_result_files_tell_cpus_of_one_model_name_apart(monkeypatch, flags, tier):
    # two "AMD EPYC" machines (Zen 3 AVX2-only, Zen 4 with bf16) once wrote the same result file
    assert P.cpu_tier(flags) == tier
    monkeypatch.setattr(P, "cpu_info", lambda: {"model": "AMD EPYC", "flags": flags, "bf16_native": False})
    assert P.device_slug("cpu") == ("amd-epyc-" + tier if tier else "amd-epyc")
