import math

import pytest

import torch

from clipwb.config import ConfigError
from clipwb.models import tiny_model_config
from clipwb.training.pretrain import lr_at, pretrain, pretrain_config


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pretraining_is_deterministic_and_seeded():
    cfg = pretrain_config("quick", steps=6)
    m1, log1 = pretrain(cfg, progress=False)
    m2, log2 = pretrain(cfg, progress=False)
    m3, _ = pretrain(pretrain_config("quick", steps=6, seed=1), progress=False)
    assert _same(m1, m2) and log1["loss"] == log2["loss"]
    assert not _same(m1, m3)


def test_loss_goes_down_on_a_small_run():
    m, log = pretrain(pretrain_config("quick", steps=40, lr=2e-3, warmup=5), progress=False)
    first, last = sum(log["loss"][:5]) / 5, sum(log["loss"][-5:]) / 5
    assert last < first - 0.2, (first, last)
    assert all(math.isfinite(v) for v in log["loss"])


def test_schedule_warms_up_then_decays_to_zero():
    cfg = pretrain_config("full")
    assert lr_at(0, cfg) < lr_at(cfg.warmup - 1, cfg) == cfg.lr
    assert lr_at(cfg.steps - 1, cfg) < 1e-3 * cfg.lr


def test_weights_hash_ignores_bookkeeping_but_not_training_knobs():
    mc = tiny_model_config()
    base = pretrain_config("full")
    assert base.weights_hash(mc) == pretrain_config("full", eval_every=7, workers=1).weights_hash(mc)
    assert base.weights_hash(mc) != pretrain_config("full", lr=2e-3).weights_hash(mc)


def test_per_model_profile_gives_the_vit_its_own_stage_and_overrides_still_win():
    from clipwb import profiles

    vit = "clipwb-tiny-vit"
    full_vit = profiles.profile("pretrain_models", "full")[vit]
    cfg = pretrain_config("full", model_name=vit)
    assert (cfg.steps, cfg.init, cfg.lr) == (full_vit["steps"], full_vit["init"], full_vit["lr"])
    assert cfg.init and not pretrain_config("full").init  # the ViT continues its earlier stage, the conv tower does not
    assert cfg.world.caption_mentions_text == full_vit["world"]["caption_mentions_text"]
    assert pretrain_config("full").world.caption_mentions_text == 0.3  # the conv tower's world is unchanged
    assert pretrain_config("full", model_name=vit, steps=5).steps == 5  # an explicit override beats the profile's
    assert pretrain_config("quick", model_name=vit).steps == pretrain_config("quick").steps  # quick stays quick
    with pytest.raises(ValueError, match="unknown pretraining profile"):
        profiles.profile("pretrain_models", "huge")


def test_unknown_override_is_rejected():
    import pytest

    with pytest.raises(ConfigError, match="unknown option"):
        pretrain_config("full", learning_rate=1.0)
    with pytest.raises(ValueError, match="unknown pretraining profile"):
        pretrain_config("huge")


def test_batch_schedule_reads_first_then_plain_epochs():
    import numpy as np

    from clipwb.training.pretrain import batch_schedule

    cfg = pretrain_config("full", n_images=400, steps=30, batch_size=20, early_steps=5, early_text_share=0.5)
    kinds = np.array(["text" if i % 4 == 0 else "object" for i in range(400)])
    b = batch_schedule(cfg, kinds, np.random.default_rng(0))
    for step in range(cfg.steps):
        idx = b(step)
        assert len(idx) == 20 and idx.min() >= 0 and idx.max() < 400
        share = (kinds[idx] == "text").mean()
        if step < 5:
            assert share >= 0.5
    # after the curriculum, batches walk through a permutation: the first 400 plain draws cover every image
    plain = np.concatenate([b(s) for s in range(5, 30)])
    assert len(np.unique(plain)) > 0.85 * 400
    again = batch_schedule(cfg, kinds, np.random.default_rng(0))
    assert all(np.array_equal(b(s), again(s)) for s in range(cfg.steps))


def test_yaml_overrides_reach_nested_world_config(tmp_path):
    import pytest

    from clipwb.config import load_yaml
    from clipwb.world import WorldConfig

    f = tmp_path / "pre.yaml"
    f.write_text("steps: 7\nworld:\n  seed: 3\n  text_size: [0.2, 0.3]\n")
    cfg = load_yaml(pretrain_config("full"), f)
    assert cfg.steps == 7 and isinstance(cfg.world, WorldConfig)
    assert cfg.world.seed == 3 and cfg.world.text_size == (0.2, 0.3)
    f.write_text("world:\n  colour: red\n")
    with pytest.raises(ConfigError, match="unknown option"):
        load_yaml(pretrain_config("full"), f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(pretrain_config("full"), tmp_path / "missing.yaml")


def test_distillation_takes_the_teachers_frozen_text_tower_and_pulls_images_towards_it():
    """teacher="tiny": the ViT student starts from the conv model's text tower and logit scale, which do not train,
    and the cosine distance of its image embeddings to the teacher's falls (the teacher is the shipped model)."""
    from clipwb.models import load_model
    from clipwb.training.pretrain import distill_loss, text_tower_keys

    teacher = load_model("tiny").model
    cfg = pretrain_config("quick", model_name="clipwb-tiny-vit", teacher="tiny", steps=30, lr=2e-3, warmup=3,
                          precision="fp32")
    student, log = pretrain(cfg, progress=False)
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    keys = text_tower_keys(student)
    assert "logit_scale" in keys and "text_projection" in keys and not any(k.startswith("visual.") for k in keys)
    assert all(torch.equal(s_sd[k].float(), t_sd[k].float()) for k in keys)  # copied, then frozen
    d = log["distill"]
    assert len(d) == 30 and sum(d[-5:]) / 5 < sum(d[:5]) / 5 - 0.05, d
    f = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert distill_loss(f, f).abs().item() < 1e-6 and abs(distill_loss(f, -f).item() - 2) < 1e-6
    # a distilled run is other weights: its hash differs; the default (no teacher) keeps the shipped key
    mc = tiny_model_config("clipwb-tiny-vit")
    assert cfg.weights_hash(mc) != pretrain_config("quick", model_name="clipwb-tiny-vit").weights_hash(mc)


def test_distillation_refuses_a_teacher_with_another_text_tower():
    import open_clip
    import pytest

    from clipwb.models import register_configs
    from clipwb.training.pretrain import take_text_tower

    register_configs()
    student = open_clip.create_model("clipwb-tiny-vit")
    other = open_clip.create_model("RN50")  # a 512-wide text tower
    with pytest.raises(ValueError, match="same text config"):
        take_text_tower(student, other)
    with pytest.raises(ValueError, match="distill_weight"):
        pretrain_config("quick", distill_weight=-1.0)


def test_continued_pretraining_starts_from_the_named_weights_and_a_wrong_key_fails_before_any_work(monkeypatch):
    """init=<key>: the run starts from that weights file (one step at a vanishing learning rate leaves the shipped
    model's weights as they are; from scratch they are other weights), the key counts in the weights hash, and a
    key with no file fails at once, naming the fix, before a world image is drawn."""
    from clipwb.models import load_model
    from clipwb.models.loading import default_tiny_key
    from clipwb.world import World

    key = default_tiny_key("clipwb-tiny")
    kw = dict(steps=1, n_images=64, batch_size=16, lr=1e-12, warmup=0, early_steps=0, precision="fp32")
    cont, _ = pretrain(pretrain_config("quick", init=key, **kw), progress=False)
    scratch, _ = pretrain(pretrain_config("quick", **kw), progress=False)
    shipped = load_model("tiny").model

    def max_diff(a, b):  # parameters: BatchNorm's running statistics move in a training step whatever the lr
        return max((x.float() - y.float()).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))

    assert max_diff(cont, shipped) < 1e-6 < max_diff(scratch, shipped)
    mc = tiny_model_config()
    assert pretrain_config("full", init=key).weights_hash(mc) != pretrain_config("full").weights_hash(mc)

    def no_world(*a, **k):
        raise AssertionError("generated world images before checking the init weights")

    monkeypatch.setattr(World, "generate", no_world)
    with pytest.raises(FileNotFoundError, match="init weights clipwb-tiny-0123456789ab not found.*index.json"):
        pretrain(pretrain_config("quick", init="0123456789ab", **kw), progress=False)
