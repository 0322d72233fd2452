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
