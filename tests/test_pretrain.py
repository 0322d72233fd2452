import math

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
