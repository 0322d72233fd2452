"""The side-by-side views of two image towers: notebook 00's world checks and notebook 07's defence table."""
import numpy as np
import pytest

from clipwb.experiments.defences import DefenceRuns, merged_results, towers_table
from clipwb.experiments.zero_shot import world_checks


def _suite(clean, control, typo, gender=0.9):
    return {"zero_shot_clean_top1": clean, "zero_shot_control_top1": control, "zero_shot_typo_top1": typo,
            "attack_success": 0.3, "text_read_top1": 0.8, "probe_ceiling_typo": 0.85, "gender_top1": gender,
            "occupation_top1": 0.95}


def test_world_checks_derive_both_damages_and_judge_each_model():
    rows = {r["check"]: r for r in world_checks({"conv": _suite(0.90, 0.61, 0.43), "vit": _suite(0.92, 0.80, 0.50,
                                                                                               gender=0.8)})}
    assert abs(rows["presence_damage"]["conv"] - 0.29) < 1e-9 and abs(rows["reading_damage"]["conv"] - 0.18) < 1e-9
    assert rows["presence_damage"]["conv meets"] is False and rows["presence_damage"]["vit meets"] is True
    assert rows["reading_damage"]["vit meets"] is True  # 0.30 >= 0.20
    assert rows["zero_shot_typo_top1"]["vit meets"] is False  # 0.50 > 0.45
    assert rows["gender_top1"]["vit meets"] is False and rows["gender_top1"]["target"] == ">= 0.85"
    assert "target" not in rows["attack_success"]


def test_towers_table_has_a_row_per_model_and_defence_with_intervals():
    def runs(ko, seeds):
        r = DefenceRuns(seeds=seeds)
        r.results = {"zero_shot": {"clean_top1": 0.9, "clean_top1_ci": [0.88, 0.92], "typo_top1": 0.43},
                     "kto": {"clean_top1": 0.9, "typo_top1": ko, "typo_top1_ci": [ko - 0.02, ko + 0.02]},
                     "dpo": {"clean_top1": 0.9, "typo_top1": 0.7},
                     "head_ablation": {"clean_top1": 0.89, "typo_top1": 0.6}}
        return r

    rows = towers_table({"tiny": runs(0.78, (0, 1, 2)), "tiny-vit": runs(0.5, (0,))})
    assert len(rows) == 8 and {r["model"] for r in rows} == {"tiny", "tiny-vit"}
    tiny = {r["defence"]: r for r in rows if r["model"] == "tiny"}
    vit = {r["defence"]: r for r in rows if r["model"] == "tiny-vit"}
    assert "kto (best PO)" in tiny and "dpo (best PO)" in vit  # each tower's own best
    assert tiny["kto (best PO)"]["training seeds"] == 3 and vit["kto"]["training seeds"] == 1
    assert tiny["zero_shot"]["training seeds"] == "-" and tiny["head_ablation"]["training seeds"] == "-"
    assert "[0.760, 0.800]" in tiny["kto (best PO)"]["typo_top1"]
    merged = merged_results({"tiny": runs(0.78, (0,)), "tiny-vit": runs(0.5, (0,))})
    assert set(merged) >= {"kto · tiny", "kto · tiny-vit", "zero_shot · tiny-vit"}


def test_the_conv_stem_trial_keeps_the_token_grid_and_runs(tmp_path):
    """benchmarks/tiny_vit_stem.py: the stem replaces the patchify conv at the same stride (same 8x8 grid, same
    embedding shape, FLOPs within 10 % of the conv tower's), refuses another patch size, and a two-step trial writes
    its curve."""
    import json
    from pathlib import Path

    import open_clip
    import torch
    from conftest import load_benchmark

    mod = load_benchmark("tiny_vit_stem")
    name = mod.register_trial(5)
    m = open_clip.create_model(name)
    assert isinstance(m.visual.conv1, torch.nn.Sequential) and m.visual.grid_size == (8, 8)
    assert m.encode_image(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
    from clipwb.models.inputs import image_flops

    ratio = image_flops(m) / image_flops(open_clip.create_model("clipwb-tiny"))
    assert 0.9 < ratio < 1.1
    bad = open_clip.create_model("clipwb-tiny-vit")
    bad.visual.conv1 = torch.nn.Conv2d(3, 128, 4, 4)
    with pytest.raises(ValueError, match="patch size is 4"):
        mod.with_conv_stem(bad)
    out = tmp_path / "trial.json"
    assert mod.main(["--steps", "2", "--n-images", "256", "--eval-every", "2", "--eval-n", "16", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [e["step"] for e in r["eval"]] == [2] and len(r["loss"]) == 2 and r["config"]["model_name"] == name
    # --plain --save-cache: the shipped tiny-vit's config, its weights kept under the key the pretrain command uses
    from clipwb.models import tiny_weights_key
    from clipwb.training.pretrain import pretrain_config

    assert mod.main(["--plain", "--steps", "2", "--n-images", "256", "--eval-every", "2", "--eval-n", "16",
                     "--save-cache", str(tmp_path / "cache"), "--log", str(tmp_path / "log.json"),
                     "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    cfg = pretrain_config("full", model_name="clipwb-tiny-vit", steps=2, n_images=256)
    assert Path(r["weights"]).name == f"clipwb-tiny-vit-{tiny_weights_key(cfg)}.safetensors"
    assert Path(r["weights"]).is_file() and r["final_test_1024"]["n"] == 1024 and (tmp_path / "log.json").is_file()


def test_notebook_08_trains_the_po_methods_of_07s_tower_rows_by_default():
    """08's default PO methods are 07's tower rows' (so 08 reads 07's cached ViT runs and trains nothing more)."""
    from clipwb.experiments.defences import TOWER_ROWS, tower_po_methods
    from clipwb.losses.po import po_methods

    # the two preference methods that contend for best on the conv tower, in 07's row order; IPO is cut (issue 28)
    assert tower_po_methods() == ["dpo", "kto"]
    assert {"dpo", "kto", "ipo"} <= set(po_methods(baseline=False)) and "ipo" not in TOWER_ROWS
    # 08 trains these unless its `methods` parameter names others
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "08_reading.ipynb").read_text())
    assert any("methods or tower_po_methods()" in "".join(c["source"]) for c in nb["cells"])


def test_paired_world_checks_split_the_attack_into_presence_and_reading_damage():
    """benchmarks/world_checks_paired.py: per image, presence damage = clean - control and reading damage = control -
    attack, paired across the two models (hand-made correctness: B loses half the controls, A none)."""
    from conftest import load_benchmark

    mod = load_benchmark("world_checks_paired")
    n = 200
    half = np.arange(n) % 2 == 0
    a = {"object": np.ones(n, bool), "object_other_text": np.ones(n, bool), "typographic": half}
    b = {"object": np.ones(n, bool), "object_other_text": half, "typographic": half}
    p = mod.paired_damages(a, b)
    assert p["object"]["diff"] == 0.0 and p["typographic"]["diff"] == 0.0
    assert p["object_other_text"]["diff"] == pytest.approx(0.5)
    assert p["presence_damage"]["diff"] == pytest.approx(-0.5)  # A: text that names no class costs nothing
    assert p["reading_damage"]["diff"] == pytest.approx(0.5)  # A: the class name costs it 0.5, B: nothing more
    assert p["reading_damage"]["significant"] and p["reading_damage"]["ci"][0] > 0.3
    with pytest.raises(ValueError, match="typographic"):
        mod.paired_damages({k: v for k, v in a.items() if k != "typographic"}, b)


def test_the_world_suite_keeps_per_image_predictions_of_clean_control_and_attack(tiny):
    """world_checks_paired.py reads per-image correctness from the cached suite: its means are the suite's top-1s."""
    from conftest import load_benchmark

    from clipwb.experiments.zero_shot import world_suite
    from clipwb.world import World, WorldConfig

    metrics, preds = world_suite(tiny, World(WorldConfig(seed=0)), 48, 0)
    c = load_benchmark("world_checks_paired").per_image_correct(preds)
    assert all(len(v) == 48 for v in c.values())
    assert c["object"].mean() == pytest.approx(metrics["zero_shot_clean_top1"])
    assert c["object_other_text"].mean() == pytest.approx(metrics["zero_shot_control_top1"])
    assert c["typographic"].mean() == pytest.approx(metrics["zero_shot_typo_top1"])
