"""The run cache: content fingerprints, JSON and tensor results computed once per key, PO runs not retrained."""
import copy
import json

import numpy as np
import pytest
import torch

from clipwb.cache import cached_json, cached_tensors, fingerprint, run_dir


def test_fingerprint_follows_content_not_identity(tiny):
    a = {"x": np.arange(6, dtype=np.uint8), "y": torch.ones(3)}
    assert fingerprint(a) == fingerprint(copy.deepcopy(a))
    b = copy.deepcopy(a)
    b["x"][0] = 1
    assert fingerprint(b) != fingerprint(a)
    assert fingerprint(a) != fingerprint({"x": a["x"].astype(np.int16), "y": a["y"]})  # dtype counts
    m = copy.deepcopy(tiny.model)
    assert fingerprint(m) == fingerprint(tiny.model)
    with torch.no_grad():
        next(m.parameters()).add_(1e-3)
    assert fingerprint(m) != fingerprint(tiny.model)


def test_cached_json_and_tensors_compute_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"v": len(calls)}

    assert cached_json("t", [1, "a"], compute, tmp_path) == {"v": 1}
    assert cached_json("t", [1, "a"], compute, tmp_path) == {"v": 1} and len(calls) == 1
    assert cached_json("t", [2, "a"], compute, tmp_path) == {"v": 2}
    assert cached_json("t", [1, "a"], compute, tmp_path, enabled=False) == {"v": 3}
    W = {"W": torch.randn(4, 4, dtype=torch.float64)}
    got = cached_tensors("w", ["k"], lambda: W, tmp_path)
    again = cached_tensors("w", ["k"], lambda: pytest.fail("recomputed"), tmp_path)
    assert torch.equal(got["W"], W["W"]) and torch.equal(again["W"], W["W"]) and again["W"].dtype == torch.float64
    assert not list(run_dir(tmp_path).glob(".*tmp")), "no temp file left behind"


def test_po_runs_are_cached_by_config_model_and_data(tiny, tmp_path, monkeypatch):
    import clipwb.experiments.po as po
    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.world import World

    classes, sets, _ = attack_arrays("world", world=World(), n_train=24, n_test=12, cfg=AttackSetsConfig(k=1),
                                     root=tmp_path / "sets", progress=False)
    common = dict(batch_size=12, epochs=1, device="cpu", precision="fp32")
    first = po.compare_methods(tiny, classes, sets, ["dpo"], "embedded", common, progress=False)
    assert first.results["dpo"]["avg"]["typo_top1"] >= 0 and len(first.logs["dpo"]) == 2
    import clipwb.experiments.context as C

    monkeypatch.setattr(C, "train_po", lambda *a, **k: pytest.fail("retrained a cached run"))
    again = po.compare_methods(tiny, classes, sets, ["dpo"], "embedded", common, progress=False)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (NaN == NaN)
    assert same(again.results, first.results) and same(again.logs, first.logs)
    # another config or other data is another run
    with pytest.raises(pytest.fail.Exception):
        po.compare_methods(tiny, classes, sets, ["dpo"], "embedded", {**common, "beta": 0.5}, progress=False)
    other = {k: dict(v) for k, v in sets.items()}
    other["train"]["typo"] = other["train"]["typo"][::-1].copy()
    with pytest.raises(pytest.fail.Exception):
        po.compare_methods(tiny, classes, other, ["dpo"], "embedded", common, progress=False)


def test_reference_logprobs_are_computed_once_per_model_and_data(tiny, monkeypatch):
    import numpy as np
    import torch

    import clipwb.training.reference as T
    from clipwb.precision import Precision

    x = np.random.default_rng(0).integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    prec = Precision("fp32", "default")
    first = T.cached_reference_logprobs(tiny.model, tiny.tokenizer, ["cat", "dog"], x, ("a photo of a {}.",), prec)
    assert torch.equal(first, T.reference_logprobs(tiny.model, tiny.tokenizer, ["cat", "dog"], x,
                                                   ("a photo of a {}.",), precision=prec))
    monkeypatch.setattr(T, "reference_logprobs", lambda *a, **k: pytest.fail("recomputed cached log-probs"))
    again = T.cached_reference_logprobs(tiny.model, tiny.tokenizer, ["cat", "dog"], x, ("a photo of a {}.",), prec)
    assert torch.equal(first, again)
    with pytest.raises(pytest.fail.Exception):  # other images are another entry
        T.cached_reference_logprobs(tiny.model, tiny.tokenizer, ["cat", "dog"], x[:6], ("a photo of a {}.",), prec)


# -- a cache that heals itself ----------------------------------------------------------------------------------
def _damage(path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\x00garbage\xff" * 40)
    elif how == "legacy":  # an entry written before entries carried a digest: plain JSON
        path.write_text(json.dumps({"v": 1}))
    elif how == "changed":  # bytes changed in place, the file still parses
        if path.suffix == ".json":
            path.write_bytes(raw.replace(b'"v": 1', b'"v": 7'))
        else:
            from safetensors import safe_open
            from safetensors.torch import save_file

            with safe_open(str(path), framework="pt") as f:
                meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
            save_file({k: v.flip(0).contiguous() for k, v in t.items()}, str(path), metadata=meta)  # rows shuffled


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "legacy", "changed"])
def test_a_broken_json_entry_is_named_discarded_and_recomputed(tmp_path, caplog, how):
    calls = []

    def compute():
        calls.append(1)
        return {"v": 1, "rows": [[1.5, 2.5], [3.5, 4.5]]}

    cached_json("world-suite", ["k"], compute, tmp_path)
    (path,) = run_dir(tmp_path).glob("world-suite-*.json")
    _damage(path, how)
    with caplog.at_level("WARNING", logger="clipwb.cache"):
        got = cached_json("world-suite", ["k"], compute, tmp_path)
    assert got == compute() and len(calls) == 3  # recomputed once (the third call is this assert's)
    warned = [r.getMessage() for r in caplog.records if r.name == "clipwb.cache"]
    assert len(warned) == 1 and str(path) in warned[0] and "\n" not in warned[0]
    # rewritten whole: the next read is quiet and computes nothing
    caplog.clear()
    assert cached_json("world-suite", ["k"], lambda: pytest.fail("recomputed"), tmp_path)["v"] == 1
    assert not caplog.records


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "changed"])
def test_a_broken_tensor_entry_is_named_discarded_and_recomputed(tmp_path, caplog, how):
    logp = {"logp": torch.log_softmax(torch.arange(24, dtype=torch.float32).view(6, 4) / 7, -1)}
    cached_tensors("ref-logprobs", ["k"], lambda: logp, tmp_path)
    (path,) = run_dir(tmp_path).glob("ref-logprobs-*.safetensors")
    _damage(path, how)
    with caplog.at_level("WARNING", logger="clipwb.cache"):
        got = cached_tensors("ref-logprobs", ["k"], lambda: logp, tmp_path)
    assert torch.equal(got["logp"], logp["logp"])
    warned = [r.getMessage() for r in caplog.records if r.name == "clipwb.cache"]
    assert len(warned) == 1 and str(path) in warned[0]
    again = cached_tensors("ref-logprobs", ["k"], lambda: pytest.fail("recomputed"), tmp_path)
    assert torch.equal(again["logp"], logp["logp"])


def test_a_shuffled_reference_entry_no_longer_changes_a_po_run(tiny, tmp_path, caplog):
    """The issue's case: reference log-probs with rows shuffled parsed, and PO trained against them silently."""
    from clipwb.training.po_trainer import POConfig, train_po

    rng = np.random.default_rng(0)
    data = {"typo": rng.integers(0, 255, (16, 64, 64, 3), dtype=np.uint8),
            "clean": rng.integers(0, 255, (16, 64, 64, 3), dtype=np.uint8),
            "true": rng.integers(0, 3, 16), "written": (rng.integers(0, 3, 16) + 1) % 3}
    cfg = POConfig(method="dpo", batch_size=8, epochs=1, lr=1e-3, device="cpu", precision="fp32")
    first = train_po(tiny.model, tiny.tokenizer, ["cat", "dog", "car"], data, cfg, progress=False)
    for path in run_dir().glob("ref-logprobs-*.safetensors"):
        _damage(path, "changed")
    with caplog.at_level("WARNING", logger="clipwb.cache"):
        second = train_po(tiny.model, tiny.tokenizer, ["cat", "dog", "car"], data, cfg, progress=False)
    assert [r["loss"] for r in second.log] == [r["loss"] for r in first.log]
    assert sum("discarded" in r.getMessage() for r in caplog.records) == 2  # typo and clean entries


def test_cache_list_verify_and_clear(tmp_path, capsys):
    import os
    import time

    from clipwb.cli import main

    cached_json("po-run", ["a"], lambda: {"v": 1}, tmp_path)
    cached_json("gca", ["b"], lambda: {"v": 2}, tmp_path)
    cached_tensors("ref-logprobs", ["c"], lambda: {"x": torch.ones(3)}, tmp_path)
    old = next(run_dir(tmp_path).glob("gca-*.json"))
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    (run_dir(tmp_path) / ".po-run-x.json.abc.tmp").write_text("{")  # an interrupted write
    assert main(["cache", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "po-run" in out and "gca" in out and "ref-logprobs" in out and "1 interrupted write" in out
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0
    assert out.count("\n") >= 4 and "BROKEN" not in capsys.readouterr().out
    _damage(next(run_dir(tmp_path).glob("po-run-*.json")), "truncated")
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "1 broken" in out
    assert main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 2  # says what to name
    assert "--older-than" in capsys.readouterr().err
    assert main(["cache", "clear", "--bad", "--cache-dir", str(tmp_path)]) == 0
    assert {e.kind for e in __import__("clipwb.cache").cache.entries(tmp_path)} == {"gca", "ref-logprobs"}
    assert not list(run_dir(tmp_path).glob(".*.tmp"))
    assert main(["cache", "clear", "--older-than", "7d", "--cache-dir", str(tmp_path)]) == 0
    assert {e.kind for e in __import__("clipwb.cache").cache.entries(tmp_path)} == {"ref-logprobs"}
    assert main(["cache", "clear", "--older-than", "soon", "--cache-dir", str(tmp_path)]) == 2
    assert "expected a non-negative age" in capsys.readouterr().err
    assert main(["cache", "clear", "--kind", "ref-logprobs", "--cache-dir", str(tmp_path)]) == 0
    assert not __import__("clipwb.cache").cache.entries(tmp_path)
