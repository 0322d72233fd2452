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
