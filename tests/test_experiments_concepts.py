import numpy as np
import pytest

from clipwb.experiments.concepts import (concept_data, evaluate, linear_probes, stereotyped_sets, sweep_t,
                                         train_concept_map, _pairs_mitigation)
from clipwb.steering.linear import LinearMapConfig
from clipwb.world import World


@pytest.fixture(scope="module")
def cd(tiny):
    return concept_data(tiny, World(), 96, "val")


def test_faint_portraits_are_seeded_and_only_fade_the_hat():
    w = World()
    a, ra = w.sample(5, "test", "portrait_faint")
    b, rb = w.sample(5, "test", "portrait_faint")
    c, rc = w.sample(5, "test", "portrait")
    assert np.array_equal(np.asarray(a), np.asarray(b)) and ra == rb
    assert 0.3 <= ra["hat_alpha"] <= 0.6 and rc["hat_alpha"] == 1.0
    assert {k: v for k, v in ra.items() if k not in ("hat_alpha", "kind", "caption")} == \
        {k: v for k, v in rc.items() if k not in ("hat_alpha", "kind", "caption")}
    diff = np.abs(np.asarray(a, dtype=int) - np.asarray(c, dtype=int)).sum(-1) > 0
    assert 0 < diff.mean() < 0.2  # only the hat's pixels differ


def test_identity_is_the_original_and_bias_is_measurable(cd):
    base = evaluate(cd)
    assert evaluate(cd, np.eye(cd.feats["objects"].shape[1])) == base
    assert base["gender_top1"] > 0.85 and base["occupation_top1"] > 0.9
    assert base["faint_occupation_top1"] < base["occupation_top1"] - 0.2  # faint hats are harder


def test_mitigation_pairs_prefer_truth_over_a_stereotype(cd):
    _, _, y_w, y_l, _ = _pairs_mitigation(cd)
    st = stereotyped_sets(cd.classes["occupations"], cd.classes["genders"])
    g = cd.labels["faint"]["gender"]
    assert all(l != w and l in st[gi] for w, l, gi in zip(y_w, y_l, g))


def test_gender_map_moves_gender_and_keeps_occupation(cd):
    fam, log = train_concept_map(cd, "gender_reverse", LinearMapConfig(steps=150, lr=0.02, lam=5, nu=0.1))
    rows = sweep_t(cd, fam, [0.0, 1.0, 2.0])
    assert rows[0]["gender_top1"] > rows[1]["gender_top1"] > rows[2]["gender_top1"]
    assert abs(rows[1]["occupation_top1"] - rows[0]["occupation_top1"]) < 0.05
    probes = linear_probes(cd, None)
    assert all(0 <= v <= 1 for v in probes.values()) and probes["gender"] > 0.8
    with pytest.raises(ValueError, match="unknown concept"):
        train_concept_map(cd, "age")


def test_widget_updates_and_static_sweep(cd, tmp_path):
    from clipwb.widgets import steering_demo

    fam, _ = train_concept_map(cd, "typographic", LinearMapConfig(steps=50))
    gfam, _ = train_concept_map(cd, "gender_reverse", LinearMapConfig(steps=50))
    box = steering_demo(cd, {"written text": fam, "gender": gfam}, interactive=True)
    slider = box.children[1]
    probs_html = box.children[2].children[0]
    before = probs_html.value
    slider.value = 2.0
    assert probs_html.value != before and "clipwb-probs" in probs_html.value
    out = steering_demo(cd, {"gender": gfam}, interactive=False, save_dir=str(tmp_path), ts=(0.0, 1.0))
    p0 = out["gender"]["probabilities"][0.0]
    assert sum(p0.values()) == pytest.approx(1.0) and (tmp_path / "04_widget_sweep_gender.png").is_file()
    with pytest.raises(ValueError, match="unknown concepts"):
        steering_demo(cd, {"age": fam}, interactive=False)


def test_concept_maps_are_cached_exactly(cd, monkeypatch):
    import clipwb.experiments.concepts as C

    cfg = LinearMapConfig(steps=5, lr=0.02, seed=3)
    fam, log = train_concept_map(cd, "typographic", cfg)
    uncached, _ = train_concept_map(cd, "typographic", cfg, cache=False)
    assert np.array_equal(fam.W, uncached.W)
    monkeypatch.setattr(C, "train_linear_map", lambda *a, **k: pytest.fail("retrained a cached map"))
    again, log2 = train_concept_map(cd, "typographic", cfg)
    assert np.array_equal(again.W, fam.W) and log2 == log and len(log) == 5
    with pytest.raises(pytest.fail.Exception):  # another concept or config is another map
        train_concept_map(cd, "typographic", LinearMapConfig(steps=6, lr=0.02, seed=3))


def test_concept_data_is_cached_exactly(tiny, monkeypatch):
    import clipwb.experiments.concepts as C

    world = World()
    fresh = concept_data(tiny, world, 40, "val", keep_images=5)  # computes and stores
    monkeypatch.setattr(C, "encode_images", lambda *a, **k: pytest.fail("re-encoded cached images"))
    again = concept_data(tiny, world, 40, "val", keep_images=5)
    for k in fresh.feats:
        assert fresh.feats[k].dtype == again.feats[k].dtype and bool((fresh.feats[k] == again.feats[k]).all()), k
        assert all(np.array_equal(fresh.labels[k][n], again.labels[k][n]) for n in fresh.labels[k])
        assert np.array_equal(fresh.images[k], again.images[k]) and len(again.images[k]) == 5
    assert all(bool((fresh.text[k] == again.text[k]).all()) for k in fresh.text) and fresh.scale == again.scale
    assert evaluate(fresh) == evaluate(again)
    with pytest.raises(pytest.fail.Exception):  # another split is another entry
        concept_data(tiny, world, 40, "test", keep_images=5)
