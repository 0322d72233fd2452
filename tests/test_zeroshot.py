import numpy as np
import pytest
import torch

from clipwb.evaluation.zeroshot import class_text_features, top1, world_zero_shot_suite, zero_shot_logits
from clipwb.world import World


def test_top1_counts_matches():
    logits = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert top1(logits, [0, 1, 1]) == pytest.approx(2 / 3)


def test_class_features_are_normalised_template_means_and_cache_invalidates(tiny):
    m, tok = tiny.model, tiny.tokenizer
    classes, templates = ["star", "moon"], ("a photo of a {}.", "a {}.")
    f = class_text_features(m, tok, classes, templates)
    assert f.shape[0] == 2 and torch.allclose(f.norm(dim=-1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        t = torch.nn.functional.normalize(m.encode_text(tok(["a photo of a star.", "a star."])), dim=-1)
    assert torch.allclose(f[0], torch.nn.functional.normalize(t.mean(0), dim=0), atol=1e-5)
    assert class_text_features(m, tok, classes, templates) is f  # cached
    import copy

    m2 = copy.deepcopy(m)
    before = class_text_features(m2, tok, classes, templates)
    with torch.no_grad():
        m2.text_projection.mul_(-1)  # an in-place update, as an optimiser makes
    after = class_text_features(m2, tok, classes, templates)
    assert torch.allclose(after, -before, atol=1e-5)


def test_shipped_tiny_clip_recognises_reads_and_is_fooled_by_reading(tiny):
    """The pretrained tiny CLIP recognises objects, reads (and so is fooled), and reads portrait cues. Measured
    on these 512 images (seed 123): clean 0.887, attack 0.426, control 0.580, attack success 0.180, word alone
    0.746; the thresholds leave room for another CPU's rounding."""
    res = world_zero_shot_suite(tiny.model, tiny.tokenizer, World(seed=123), n=512, split="test")
    assert res["zero_shot_clean_top1"] >= 0.85
    assert res["zero_shot_typo_top1"] <= 0.50
    # it reads: errors go to the written word at twice chance or more (chance 1/15), a word alone is read
    # far above chance (1/16), and a class word costs at least 10 points more than an unrelated word written
    # the same way (the damage comes from reading, not from the text being there)
    assert res["attack_success"] >= 2 / 15 and res["text_read_top1"] >= 0.65
    assert res["zero_shot_control_top1"] - res["zero_shot_typo_top1"] >= 0.10
    assert res["gender_top1"] >= 0.85 and res["occupation_top1"] >= 0.85


def test_zero_shot_logits_accept_precomputed_features(tiny):
    data = World().generate(8, "test", "object")
    a = zero_shot_logits(tiny.model, tiny.tokenizer, data.images, World.classes)
    from clipwb.models.inputs import encode_images

    b = zero_shot_logits(tiny.model, tiny.tokenizer, None, World.classes,
                         image_features=encode_images(tiny.model, data.images))
    assert torch.allclose(a, b, atol=1e-6) and a.shape == (8, 16)
    assert np.isfinite(a.numpy()).all()


def test_recovery_is_the_share_of_the_reading_damage_undone():
    import math

    from clipwb.evaluation.typographic import recovery

    before = {"typo_top1": 0.30, "control_top1": 0.90, "typo_heldout_top1": 0.40, "control_heldout_top1": 0.40,
              "typo_note_top1": 0.2}  # heldout: no damage to undo; note: no control
    after = {"typo_top1": 0.75, "typo_heldout_top1": 0.50, "typo_note_top1": 0.9}
    r = recovery(after, before)
    assert r["recovery"] == pytest.approx(0.75)
    assert math.isnan(r["recovery_heldout"]) and "recovery_note" not in r
    assert recovery(before, before)["recovery"] == 0.0
    assert recovery({"typo_top1": 0.2}, before)["recovery"] < 0


def test_damage_takes_presence_and_reading_apart():
    """The issue's numbers: before PO clean 0.903, control 0.61, attack 0.434; after KTO control = attack = 0.78."""
    import math

    from clipwb.evaluation.typographic import damage

    before = {"clean_top1": 0.903, "control_top1": 0.61, "typo_top1": 0.434, "typo_note_top1": 0.3}
    after = {"clean_top1": 0.905, "control_top1": 0.78, "typo_top1": 0.78}
    d = damage(after, before)
    assert d["presence_damage"] == pytest.approx(0.125) and d["reading_damage"] == pytest.approx(0.0)
    assert d["reading_recovery"] == pytest.approx(1.0)  # the reading damage is gone
    assert d["presence_recovery"] == pytest.approx(1 - 0.125 / 0.293)  # text by its presence costs less
    assert "presence_damage_note" not in d  # no control for that family
    assert damage(before)["reading_damage"] == pytest.approx(0.176) and "reading_recovery" not in damage(before)
    same = damage(before, before)
    assert same["reading_recovery"] == 0.0 and same["presence_recovery"] == 0.0
    flat = {"clean_top1": 0.5, "control_top1": 0.5, "typo_top1": 0.5}
    assert math.isnan(damage(flat, flat)["reading_recovery"])


def test_classifier_eval_gives_wilson_intervals_and_per_image_correctness(tiny):
    from clipwb.evaluation.classifier import model_classifier
    from clipwb.evaluation.stats import wilson_ci
    from clipwb.evaluation.typographic import classifier_eval
    from clipwb.evaluation.zeroshot import top1, zero_shot_logits
    from clipwb.world import World

    w = World()
    clean = w.generate(40, "test", "object")
    typo = w.generate(40, "test", "typographic")
    classes = w.classes
    sets = {"test": {"clean": clean.images, "typo": typo.images, "true": clean.labels("class_name", classes),
                     "written": typo.labels("text", classes)}}
    sets["test"]["true"] = typo.labels("class_name", classes)  # the attacked images' classes
    sets["test"]["clean"] = typo.images  # any images with those labels: the evaluation only needs pairs of arrays
    clf = model_classifier(tiny.model, tiny.tokenizer, classes)
    m, correct = classifier_eval(clf, sets, return_correct=True)
    assert m["clean_top1"] == top1(zero_shot_logits(tiny.model, tiny.tokenizer, sets["test"]["clean"], classes),
                                   sets["test"]["true"])
    assert correct["typo"].dtype == bool and len(correct["typo"]) == 40
    assert m["typo_top1"] == correct["typo"].mean()
    assert m["typo_top1_ci"] == list(wilson_ci(int(correct["typo"].sum()), 40))
    assert m["typo_top1_ci"][0] <= m["typo_top1"] <= m["typo_top1_ci"][1]
    assert classifier_eval(clf, sets) == m
