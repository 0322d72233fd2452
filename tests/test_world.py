import hashlib

import numpy as np
import pytest
from PIL import Image

from clipwb.world import KINDS, OBJECT_CLASSES, OBJECT_COLORS, OCCUPATIONS, STEREOTYPE, World, WorldConfig
from clipwb.world.shapes import draw_shape_mask


def _digest(batch):
    return hashlib.sha256(batch.images.tobytes()).hexdigest()


def test_at_least_16_distinct_classes():
    assert len(set(OBJECT_CLASSES)) >= 16


def test_same_seed_same_bytes_and_different_seed_differs():
    a = World(seed=3).generate(64, "train")
    b = World(seed=3).generate(64, "train")
    c = World(seed=4).generate(64, "train")
    assert _digest(a) == _digest(b)
    assert a.records == b.records
    assert _digest(a) != _digest(c)


def test_single_image_regenerates_alone_and_parallel_equals_serial():
    w = World(seed=1)
    batch = w.generate(2100, "val", workers=2)
    serial = w.generate(2100, "val", workers=1)
    assert _digest(batch) == _digest(serial)
    img, rec = w.sample(1234, "val")
    assert np.array_equal(np.asarray(img), batch.images[1234])
    assert rec == batch.records[1234]


def test_every_kind_and_image_size_parameter():
    w = World(image_size=96)
    for kind in KINDS:
        img, rec = w.sample(5, "test", kind)
        assert img.size == (96, 96) and rec["kind"] == kind and rec["caption"]


def test_object_manifest_is_faithful_to_pixels():
    """Re-drawing the shape from the recorded factors covers pixels of exactly the recorded colour."""
    w = World()
    batch = w.generate(64, "test", "object")
    for img, r in zip(batch.images, batch.records):
        S = img.shape[0]
        mask = Image.new("L", (S, S), 0)
        draw_shape_mask(mask, r["class_name"], r["x"] * S, r["y"] * S, r["size"] * S, r["rotation"])
        inside = np.asarray(mask) > 0
        colour = np.asarray(OBJECT_COLORS[r["color"]])
        frac = (np.abs(img[inside].astype(int) - colour).sum(-1) <= 3).mean()
        assert frac > 0.97, (r, frac)
        assert OBJECT_CLASSES[r["label"]] == r["class_name"]


def test_written_word_manifest_matches_image():
    """A typographic image equals the clean image of the same index outside the recorded text box, differs
    inside it, and the written word is a different class (same class for object_text)."""
    w = World()
    clean = w.generate(48, "test", "object")
    typo = w.generate(48, "test", "typographic")
    own = w.generate(48, "test", "object_text")
    for c, t, rc, rt, ro in zip(clean.images, typo.images, clean.records, typo.records, own.records):
        assert rt["text"] in OBJECT_CLASSES and rt["text"] != rt["class_name"]
        assert rt["written_label"] == OBJECT_CLASSES.index(rt["text"])
        assert ro["text"] == ro["class_name"]
        assert {k: rc[k] for k in ("class_name", "x", "y", "color")} == {k: rt[k] for k in ("class_name", "x", "y", "color")}
        diff = np.abs(c.astype(int) - t.astype(int)).sum(-1) > 0
        box = np.zeros_like(diff)
        x0, y0 = max(rt["text_x"] - 1, 0), max(rt["text_y"] - 1, 0)
        box[y0:rt["text_y"] + rt["text_h"] + 2, x0:rt["text_x"] + rt["text_w"] + 2] = True
        assert diff.any() and not (diff & ~box).any()


@pytest.mark.parametrize("attack", ["typographic", "typographic_note"])
@pytest.mark.parametrize("placement", ["anywhere", "object", "beside"])
def test_control_differs_from_the_attack_only_in_the_word(attack, placement):
    """Same object, font, size, colours, text block and centre; only the word differs, and outside the word's
    block the two images are identical."""
    from clipwb.world import OTHER_WORDS
    from clipwb.world.generator import CONTROL_OF

    w = World(text_placement=placement)
    for i in range(30):
        it, rt = w.sample(i, "test", attack)
        ic, rc = w.sample(i, "test", CONTROL_OF[attack])
        assert rc["text"] in OTHER_WORDS and rc["text"] not in OBJECT_CLASSES and rc["written_label"] == -1
        assert rt["text"] in OBJECT_CLASSES and rt["text"] != rt["class_name"]
        same = ("label", "color", "x", "y", "size", "rotation", "text_font", "text_size", "text_fill", "text_stroke",
                "text_style", "block_x", "block_y", "block_w", "block_h")
        assert {k: rt[k] for k in same} == {k: rc[k] for k in same}
        # both words are centred in the same block (to the pixel, up to rounding)
        for r in (rt, rc):
            assert abs((r["text_x"] + r["text_w"] / 2) - (r["block_x"] + r["block_w"] / 2)) <= 1
        a, c = np.asarray(it, dtype=int), np.asarray(ic, dtype=int)
        diff = (a != c).any(-1)
        block = np.zeros_like(diff)
        block[rt["block_y"]:rt["block_y"] + rt["block_h"] + 1, rt["block_x"]:rt["block_x"] + rt["block_w"] + 1] = True
        assert diff.any() and not (diff & ~block).any()


def test_text_beside_the_object_is_centred_above_or_below_it():
    w = World(text_placement="beside", object_size=(0.16, 0.28))
    S = w.config.image_size
    for i in range(40):
        _, r = w.sample(i, "test", "object_other_text")
        cy = r["block_y"] + r["block_h"] / 2
        top, bottom = (r["y"] - r["size"]) * S, (r["y"] + r["size"]) * S
        # the centre sits outside the object's vertical extent unless the block cannot fit there (then clipped)
        fits_above = top >= r["block_h"] / 2
        fits_below = S - bottom >= r["block_h"] / 2
        if fits_above and top >= S - bottom:
            assert cy <= top + 1
        elif fits_below and S - bottom > top:
            assert cy >= bottom - 1


def test_text_on_the_object_sits_inside_the_object_box():
    w = World(text_placement="object")
    S = w.config.image_size
    for i in range(40):
        _, r = w.sample(i, "test", "typographic")
        cx, cy = r["block_x"] + r["block_w"] / 2, r["block_y"] + r["block_h"] / 2
        half = r["size"] * S
        # the centre is in the object's box, unless the block would leave the image there (then clipped inward)
        assert r["x"] * S - half - 1 <= cx <= r["x"] * S + half + 1 or not (r["block_w"] / 2 <= r["x"] * S <= S - r["block_w"] / 2)
        assert r["y"] * S - half - 1 <= cy <= r["y"] * S + half + 1 or not (r["block_h"] / 2 <= r["y"] * S <= S - r["block_h"] / 2)


def test_eval_splits_are_balanced_and_train_is_biased():
    w = World()
    test = w.generate(16 * 8, "test", "object")
    counts = np.bincount(test.labels("class_name", OBJECT_CLASSES), minlength=16)
    assert (counts == 8).all()
    port = w.generate(120, "test", "portrait")
    cells = {(r["gender"], r["occupation"]) for r in port.records}
    assert len(cells) == 2 * len(OCCUPATIONS)
    assert np.mean([r["stereotypical"] for r in port.records]) == pytest.approx(0.5)
    train = World(gender_occupation_bias=0.8).generate(3000, "train", "portrait")
    share = np.mean([STEREOTYPE[r["occupation"]] == r["gender"] for r in train.records])
    assert 0.76 < share < 0.84
    assert np.mean([r["stereotypical"] for r in World(gender_occupation_bias=0.5).generate(3000, "train", "portrait").records]) < 0.55


@pytest.mark.parametrize("cfg", [WorldConfig(), WorldConfig(
    mix_object=0.30, mix_object_text=0.24, mix_object_other_text=0.08, mix_text=0.22, mix_portrait=0.16, mix_sign=0.0,
    text_other_share=0.25), WorldConfig(mix_object=0.34, mix_object_text=0.26, mix_object_other_text=0.0, mix_text=0.22,
                                        mix_portrait=0.18, mix_sign=0.0, text_other_share=0.0)],
    ids=["default", "more-unrelated-words-no-signs", "before-issue-13"])
def test_pretraining_mixture_shares(cfg):
    from clipwb.world import MIX_KINDS

    recs = World(cfg).generate(3000, "train").records
    for k, want in zip(MIX_KINDS, cfg.mix_shares()):
        share = np.mean([r["kind"] == k for r in recs])
        assert abs(share - want) < 0.03, (k, share, want)
    words = [r["text"] for r in recs if r["kind"] == "text"]
    assert abs(np.mean([w not in OBJECT_CLASSES for w in words]) - cfg.text_other_share) < 0.06
    assert all(r["text"] not in OBJECT_CLASSES for r in recs if r["kind"] == "object_other_text")
    # a sign: another class name written on the object, the caption transcribes the word and names no object
    for r in (r for r in recs if r["kind"] == "sign"):
        assert r["text"] in OBJECT_CLASSES and r["text"] != r["class_name"]
        assert r["text"] in r["caption"] and r["class_name"] not in r["caption"].replace(r["text"], "")


def test_sign_is_the_typographic_image_captioned_by_its_word():
    w = World()  # the default world: words beside the object, signs in pretraining
    for i in range(12):
        sign, rs = w.sample(i, "train", "sign")
        typo, rt = w.sample(i, "train", "typographic")
        assert np.array_equal(np.asarray(sign), np.asarray(typo)) and rs["text"] == rt["text"]
        assert rs["caption"] != rt["caption"] and rs["text"] in rs["caption"]


def test_splits_share_no_image():
    w = World()
    tr = {hashlib.md5(x.tobytes()).hexdigest() for x in w.generate(600, "train").images}
    te = {hashlib.md5(x.tobytes()).hexdigest() for x in w.generate(600, "test").images}
    assert not tr & te


def test_captions_name_the_recorded_factors():
    for r in World().generate(300, "train").records:
        if r["kind"] in ("object", "object_text", "object_other_text"):
            assert r["class_name"] in r["caption"]
        elif r["kind"] in ("text", "sign"):  # a sign's caption transcribes its word only
            assert r["text"] in r["caption"]
        else:
            assert r["gender"] in r["caption"] or r["occupation"] in r["caption"] or \
                {"man": "male", "woman": "female"}[r["gender"]] in r["caption"]
        assert " a a" not in r["caption"] and " a o" not in r["caption"]


@pytest.mark.parametrize("bad, match", [
    (dict(mix_object=0.9), "sum to 1"),
    (dict(image_size=16), "image_size"),
    (dict(gender_occupation_bias=1.5), "gender_occupation_bias"),
])
def test_bad_world_config(bad, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**bad)


def test_bad_split_and_kind():
    w = World()
    with pytest.raises(ValueError, match="unknown split"):
        w.sample(0, "holdout")
    with pytest.raises(ValueError, match="unknown kind"):
        w.sample(0, "test", "photo")


def test_manifest_csv_has_every_factor_of_every_image(tmp_path):
    import csv

    batch = World().generate(50, "train")
    path = batch.to_csv(tmp_path / "m" / "manifest.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 50
    for row, rec in zip(rows, batch.records):
        for k, v in rec.items():
            assert row[k] == str(v)
