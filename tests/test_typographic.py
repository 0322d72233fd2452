import numpy as np
import pytest
from PIL import Image

from clipwb.data.typographic import (REFERENCE_SIZE_FRAC, TypoRenderConfig, check_classes, draw_from_record,
                                     make_attack)
from clipwb.world import OBJECT_CLASSES, World

CLASSES = ("golden retriever", "tabby cat", "great white shark", "sports car", "apple pie with ice cream", "pizza")


def _img(size=224, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_same_seed_same_bytes_other_variant_differs():
    a, ra = make_attack(_img(), 0, CLASSES, seed=0, image_id="img/001.jpg", variant=0)
    b, rb = make_attack(_img(), 0, CLASSES, seed=0, image_id="img/001.jpg", variant=0)
    c, rc = make_attack(_img(), 0, CLASSES, seed=0, image_id="img/001.jpg", variant=1)
    assert a.tobytes() == b.tobytes() and ra == rb
    assert a.tobytes() != c.tobytes()


def test_written_word_is_another_class_and_the_record_redraws_the_image():
    img = _img()
    for v in range(12):
        out, rec = make_attack(img, 2, CLASSES, seed=1, image_id=7, variant=v)
        assert rec["written_label"] != 2 and rec["text"] == CLASSES[rec["written_label"]]
        assert np.array_equal(np.asarray(draw_from_record(img, rec)), np.asarray(out))
        assert np.asarray(img).shape == np.asarray(out).shape and out is not img


def test_reference_recipe_sizes_scale_with_the_image_side():
    for side in (224, 64):
        lo, hi = (round(f * side) for f in REFERENCE_SIZE_FRAC)
        sizes = [make_attack(_img(side), 0, ("ab", "cd"), seed=0, image_id=i, variant=0)[1]["text_size"]
                 for i in range(40)]
        assert min(sizes) >= max(lo, 6) and max(sizes) <= hi
    # multi-word names follow the reference's line split: two lines, so the block is taller than one line
    one = make_attack(_img(), 0, ("x", "pie"), seed=0, image_id=0, variant=0)[1]
    two = make_attack(_img(), 0, ("x", "apple pie with ice cream"), seed=0, image_id=0, variant=0)[1]
    assert two["text"] == "apple pie with ice cream"
    assert two["text_size_drawn_from"] == one["text_size_drawn_from"] and two["text_size"] < two["text_size_drawn_from"]
    assert two["text_h"] / two["text_size"] > 1.6 * one["text_h"] / one["text_size"]


def test_works_on_world_images_with_any_ttf_path():
    from clipwb.world.text import font_path

    img, r = World().sample(0, "test", "object")
    cfg = TypoRenderConfig(fonts=(font_path("DejaVuSerif-Bold.ttf"),), size_frac=(0.2, 0.3))
    out, rec = make_attack(img, r["label"], OBJECT_CLASSES, seed=0, image_id=0, variant=0, cfg=cfg)
    assert rec["text_font"] == "DejaVuSerif-Bold.ttf" and out.size == img.size


@pytest.mark.parametrize("classes, match", [((), "at least two"), (("a", "b", "a"), "duplicate class names"),
                                            (("a", " "), "empty class name")])
def test_bad_class_lists(classes, match):
    with pytest.raises(ValueError, match=match):
        check_classes(classes)


def test_bad_render_inputs():
    with pytest.raises(FileNotFoundError, match="not found"):
        TypoRenderConfig(fonts=("/no/such/font.ttf",))
    with pytest.raises(ValueError, match="size_frac"):
        TypoRenderConfig(size_frac=(0.3, 0.1))
    with pytest.raises(ValueError, match="colors"):
        TypoRenderConfig(colors=("white", "white"))
    with pytest.raises(ValueError, match="does not fit"):
        make_attack(_img(32), 0, ("a", "x" * 60), seed=0, image_id=0, variant=0)
    with pytest.raises(ValueError, match="outside the class list"):
        make_attack(_img(), 9, CLASSES, seed=0, image_id=0, variant=0)


def test_written_pool_restricts_the_word_and_split_attacks_is_disjoint():
    from clipwb.data.typographic import HELDOUT_FONTS, TYPO_FONTS, split_attacks

    classes = tuple(f"class{i}" for i in range(12))
    sp = split_attacks(classes, word_frac=0.25, seed=3)
    assert len(sp.test_words) == 3 and len(sp.train_words) == 9
    assert not set(sp.train_words) & set(sp.test_words) and set(sp.train_words) | set(sp.test_words) == set(range(12))
    assert sp.train_fonts == TYPO_FONTS and sp.test_fonts == HELDOUT_FONTS
    assert split_attacks(classes, seed=3) == sp and split_attacks(classes, seed=4) != sp
    seen = set()
    for true in range(12):
        for v in range(6):
            _, rec = make_attack(_img(), true, classes, seed=0, image_id=true, variant=v, written_pool=sp.test_words,
                                 cfg=TypoRenderConfig(fonts=sp.test_fonts))
            assert rec["written_label"] in sp.test_words and rec["written_label"] != true
            assert rec["text_font"] in sp.test_fonts
            seen.add(rec["written_label"])
    assert seen == set(sp.test_words)
    # no pool: the same draws as before pools existed (every other class reachable)
    _, a = make_attack(_img(), 2, classes, seed=0, image_id=7, variant=1)
    _, b = make_attack(_img(), 2, classes, seed=0, image_id=7, variant=1, written_pool=None)
    assert a == b


def test_bad_pools_and_attack_splits():
    from clipwb.data.typographic import split_attacks

    with pytest.raises(ValueError, match="at least two distinct"):
        make_attack(_img(), 0, CLASSES, seed=0, image_id=0, variant=0, written_pool=[1])
    with pytest.raises(ValueError, match="outside the class list"):
        make_attack(_img(), 0, CLASSES, seed=0, image_id=0, variant=0, written_pool=[1, 99])
    with pytest.raises(ValueError, match="disjoint"):
        split_attacks(CLASSES * 1 + ("d", "e", "f", "g", "h"), fonts=("DejaVuSans.ttf",),
                      heldout_fonts=("DejaVuSans.ttf",))
    with pytest.raises(ValueError, match="each part needs at least two"):
        split_attacks(tuple("abcdefgh"), word_frac=0.05)
    with pytest.raises(FileNotFoundError):
        split_attacks(tuple("abcdefgh"), heldout_fonts=("/no/font.ttf",))


@pytest.mark.parametrize("placement", ["object", "beside"])
@pytest.mark.parametrize("style", ["plain", "note"])
def test_attack_and_control_pair_differ_only_in_the_word(style, placement):
    from clipwb.data.typographic import control_words_for

    img = _img(96)
    cfg = TypoRenderConfig(style=style, placement=placement)
    for v in range(8):
        out, ctrl, rec = make_attack(img, 1, CLASSES, seed=3, image_id=5, variant=v, cfg=cfg,
                                     control_words=control_words_for(CLASSES))
        assert rec["control_text"] not in CLASSES and rec["text"] in CLASSES
        assert np.array_equal(np.asarray(draw_from_record(img, rec)), np.asarray(out))
        crec = {**rec, "text": rec["control_text"], "text_x": rec["control_x"], "text_y": rec["control_y"]}
        assert np.array_equal(np.asarray(draw_from_record(img, crec)), np.asarray(ctrl))
        diff = (np.asarray(out, dtype=int) != np.asarray(ctrl, dtype=int)).any(-1)
        block = np.zeros_like(diff)
        block[rec["block_y"]:rec["block_y"] + rec["block_h"] + 1, rec["block_x"]:rec["block_x"] + rec["block_w"] + 1] = True
        assert diff.any() and not (diff & ~block).any()


def test_note_style_is_deterministic_and_puts_the_word_on_a_paper_patch():
    from clipwb.world.text import NOTE_INKS, NOTE_PAPERS

    img = Image.new("RGB", (96, 96), (0, 0, 0))
    cfg = TypoRenderConfig(style="note")
    a, ra = make_attack(img, 0, CLASSES, seed=0, image_id="x", variant=0, cfg=cfg)
    b, rb = make_attack(img, 0, CLASSES, seed=0, image_id="x", variant=0, cfg=cfg)
    assert a.tobytes() == b.tobytes() and ra == rb
    assert ra["text_style"] == "note" and ra["text_fill"] in NOTE_INKS and ra["text_stroke"] in NOTE_PAPERS
    arr = np.asarray(a)
    patch = arr[ra["block_y"] + 1:ra["block_y"] + ra["block_h"] - 1, ra["block_x"] + 1:ra["block_x"] + ra["block_w"] - 1]
    paper = np.array(NOTE_PAPERS[ra["text_stroke"]])
    # most of the patch is paper, the rest is ink; nothing is drawn outside the block
    assert (patch == paper).all(-1).mean() > 0.5
    outside = np.ones(arr.shape[:2], bool)
    outside[ra["block_y"]:ra["block_y"] + ra["block_h"], ra["block_x"]:ra["block_x"] + ra["block_w"]] = False
    assert (arr[outside] == 0).all()
    assert np.array_equal(np.asarray(draw_from_record(img, ra)), arr)
