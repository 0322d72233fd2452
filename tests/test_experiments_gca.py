"""GCA experiments (notebook 05): data, views, noisy partners, metrics, seeded runs with a cache, the tiny-CLIP
pretraining switch."""

import numpy as np
import pytest
import torch

from clipwb.cache import read_json_entry

from clipwb.config import ConfigError
from clipwb.losses.ot import gca_loss
from clipwb.experiments import gca as G


@pytest.fixture(scope="module")
def data():
    return G.load_object_data(256, 128, 32)


def test_object_data_has_labels_domains_and_captions(data):
    assert data.x_train.shape == (256, 3, 32, 32) and data.x_test.shape == (128, 3, 32, 32)
    assert 0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1
    assert set(np.unique(data.y_test)) == set(range(16))  # eval split cycles through the classes
    assert data.d_train.max() < len(data.domain_names) and len(np.unique(data.d_train)) > 1
    for cap, y in zip(data.captions_train[:20], data.y_train[:20]):
        assert data.class_names[y] in cap


def test_views_are_seeded_in_range_and_differ(data):
    x = data.x_train[:16]
    a = G.augment(x, torch.Generator().manual_seed(3))
    b = G.augment(x, torch.Generator().manual_seed(3))
    c = G.augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    # without hue rotation a grey image stays grey (up to the jitter of its level)
    grey = torch.full((4, 3, 32, 32), 0.5)
    v = G.augment(grey, torch.Generator().manual_seed(0), hue=0.0)
    assert torch.allclose(v[:, 0], v[:, 1], atol=1e-5) and torch.allclose(v[:, 1], v[:, 2], atol=1e-5)


def test_noisy_partner_is_a_derangement_of_the_share():
    p = G._noisy_partner(1000, 0.3, np.random.default_rng(0))
    moved = np.flatnonzero(p != np.arange(1000))
    assert len(moved) == 300
    assert sorted(p[moved]) == sorted(moved)  # the noisy share is permuted among itself
    assert (G._noisy_partner(50, 0.0, np.random.default_rng(0)) == np.arange(50)).all()


def test_alignment_uniformity_known_values():
    z = torch.nn.functional.normalize(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    align, _ = G.alignment_uniformity(z, z)
    assert align == pytest.approx(0.0, abs=1e-12)
    pts = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # antipodal: |x - y|^2 = 4
    align, unif = G.alignment_uniformity(pts, -pts)
    assert align == pytest.approx(4.0) and unif == pytest.approx(-8.0)
    # collapsed embeddings are maximally non-uniform (0), spread ones are more uniform (negative)
    assert G.alignment_uniformity(torch.ones(10, 4), torch.ones(10, 4))[1] == pytest.approx(0.0)


def test_uot_with_huge_rho_is_balanced_gca_ince():
    s = torch.randn(12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    ref = gca_loss(s, method="gca-ince", n_iters=8)
    for ce in ("rows", "plan"):
        uot = gca_loss(s, method="gca-uot", n_iters=8, rho=1e12, eps=0.5, r2=0.0, uot_ce=ce)
        assert uot.item() == pytest.approx(ref.item(), abs=1e-8)
    # at a small rho the two forms differ, and only "rows" is a proper cross-entropy (>= 0)
    rows = gca_loss(s, method="gca-uot", rho=0.2, r2=0.0, uot_ce="rows")
    plan = gca_loss(s, method="gca-uot", rho=0.2, r2=0.0, uot_ce="plan")
    assert rows.item() >= 0 and rows.item() != pytest.approx(plan.item())
    with pytest.raises(ValueError, match="uot_ce"):
        gca_loss(s, method="gca-uot", uot_ce="cols")


def test_domain_target_plan_changes_the_simclr_loss():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    plain = G.batch_loss(G.gca_config("quick", method="gca-ince"), z1, z2, groups)
    dom = G.batch_loss(G.gca_config("quick", method="gca-ince", alpha=0.5), z1, z2, groups)
    assert torch.isfinite(dom) and dom.item() != pytest.approx(plain.item())


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown method"):
        G.gca_config("quick", method="nce")
    with pytest.raises(ValueError, match="task"):
        G.gca_config("quick", task="byol")
    with pytest.raises(ValueError, match="noise_share"):
        G.gca_config("quick", noise_share=1.0)
    with pytest.raises(ValueError, match="simclr task"):
        G.gca_config("quick", task="clip", alpha=0.5)
    with pytest.raises(ConfigError, match="unknown option"):
        G.gca_config("quick", epoch=3)
    with pytest.raises(ValueError, match="precision must be one of"):
        G.gca_config("quick", precision="fp16")


def test_precision_is_the_machines_choice_recorded_and_part_of_the_cache_key(data, tmp_path, monkeypatch):
    from clipwb.precision import resolve_precision

    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    auto = G.gca_precision(G.gca_config("quick"))  # the machine's conv-tower choice (measured once, cached)
    assert torch.equal(torch.rand(3), want)  # resolving it does not move a seeded run's RNG
    assert auto == resolve_precision("auto", "cpu")
    runs = {p: G.train_gca(G.gca_config("quick", precision=p, epochs=1), data, progress=False)
            for p in ("fp32", "bf16")}
    assert runs["fp32"]["precision"] == {"name": "fp32", "reason": "set in the config", "channels_last": False}
    assert runs["bf16"]["precision"]["name"] == "bf16" and runs["bf16"]["precision"]["channels_last"]
    assert np.isfinite(runs["bf16"]["loss"]).all()
    assert runs["bf16"]["loss"][0] != runs["fp32"]["loss"][0]  # bf16 autocast really ran the encoder
    assert runs["bf16"]["loss"][0] == pytest.approx(runs["fp32"]["loss"][0], rel=0.05)  # ... on the same batch
    # "auto" runs are cached under what they resolved to: a run in another precision is never read back
    cfg = G.gca_config("quick", epochs=1)
    got = {}
    for p in ("fp32", "bf16", "fp32"):
        monkeypatch.setenv("CLIPWB_PRECISION", p)
        got.setdefault(p, []).append(G.run_cached(cfg, data, tmp_path, progress=False))
    assert len(list((tmp_path / "runs").glob("gca-*.json"))) == 2
    assert got["fp32"][0]["loss"] == got["fp32"][1]["loss"] == runs["fp32"]["loss"]
    assert got["bf16"][0]["precision"]["name"] == "bf16" and got["bf16"][0]["loss"] == runs["bf16"]["loss"]


@pytest.mark.parametrize("task,method", [("simclr", "gca-uot"), ("clip", "gca-ince")])
def test_runs_are_deterministic_measured_and_cached(data, tmp_path, task, method):
    cfg = G.gca_config("quick", task=task, method=method, noise_share=0.25)
    a = G.run_cached(cfg, data, tmp_path, progress=False)
    files = list((tmp_path / "runs").glob("gca-*.json"))
    assert len(files) == 1 and read_json_entry(files[0])["loss"] == a["loss"]
    b = G.train_gca(cfg, data, progress=False)
    assert a["loss"] == b["loss"] and a["linear_probe_top1"] == b["linear_probe_top1"]
    assert len(a["loss"]) == cfg.epochs * (cfg.n_train // cfg.batch_size) and np.isfinite(a["loss"]).all()
    for k in ("linear_probe_top1", "domain_probe_top1"):
        assert 0 <= a[k] <= 1
    assert 0 <= a["alignment"] <= 4 and a["uniformity"] <= 0 and a["epoch_seconds_mean"] > 0
    assert ("zero_shot_top1" in a) == (task == "clip")
    rows = G.summarise([a, b])
    assert rows[0]["seeds"] == 2 and rows[0]["linear_probe_top1"]["std"] == 0.0
    with pytest.raises(ValueError, match="load_object_data"):
        G.train_gca(G.gca_config("quick", n_train=4096), data, progress=False)


def test_tiny_clip_pretraining_gca_switch_keeps_the_shipped_hash():
    from clipwb.models.loading import tiny_model_config
    from clipwb.training.pretrain import PretrainConfig, pretrain, pretrain_config

    mc = tiny_model_config()
    assert PretrainConfig().weights_hash(mc) == PretrainConfig(loss="clip").weights_hash(mc)
    assert PretrainConfig(loss="gca-uot").weights_hash(mc) != PretrainConfig().weights_hash(mc)
    _, log = pretrain(pretrain_config("quick", steps=4, loss="gca-uot"), progress=False)
    _, ref = pretrain(pretrain_config("quick", steps=4), progress=False)
    assert np.isfinite(log["loss"]).all() and log["loss"][0] != pytest.approx(ref["loss"][0])
    with pytest.raises(ValueError, match="pretraining loss"):
        pretrain(pretrain_config("quick", loss="triplet"), progress=False)


def test_versus_baseline_pairs_methods_with_ince_on_the_same_seeds():
    rows = [{"config": {"task": "simclr", "noise_share": 0.0, "method": m, "seed": s}, "linear_probe_top1": v}
            for m, vals in (("ince", (0.50, 0.52, 0.49)), ("gca-ince", (0.55, 0.58, 0.54)),
                            ("rince", (0.52, 0.49, 0.50))) for s, v in enumerate(vals)]
    out = {r["method"]: r for r in G.versus_baseline(rows, "linear_probe_top1")}
    assert set(out) == {"gca-ince", "rince"} and out["gca-ince"]["seeds"] == [0, 1, 2]
    assert out["gca-ince"]["diff"] == pytest.approx(0.16 / 3) and out["gca-ince"]["significant"]
    assert not out["rince"]["significant"] and out["rince"]["ci"][0] < 0 < out["rince"]["ci"][1]
