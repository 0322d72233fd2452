import numpy as np
import pytest
from PIL import Image

from clipwb.world.text import TEXT_COLORS, TextDoesNotFitError, font_path, render_text, split_lines


def test_reference_line_splitting_rule():
    assert split_lines("star") == "star"
    assert split_lines("golden retriever") == "golden\nretriever"
    assert split_lines("great white shark") == "great\nwhite shark"
    assert split_lines("a b c d e") == "a b\nc d e"


def test_render_is_seeded_and_records_choices():
    imgs, recs = [], []
    for _ in range(2):
        img = Image.new("RGB", (64, 64), (128, 128, 128))
        recs.append(render_text(img, "moon", np.random.default_rng(7)))
        imgs.append(np.asarray(img))
    assert np.array_equal(*imgs) and recs[0] == recs[1]
    r = recs[0]
    assert r["text_fill"] != r["text_stroke"] and r["text_fill"] in TEXT_COLORS
    assert 0 <= r["text_x"] and r["text_x"] + r["text_w"] <= 64 and r["text_y"] + r["text_h"] <= 64
    # the fill colour is on the image
    fill = np.asarray(TEXT_COLORS[r["text_fill"]])
    assert (np.abs(imgs[0].astype(int) - fill).sum(-1) == 0).sum() > 5


def test_shrinks_to_fit_and_fails_clearly_when_impossible():
    img = Image.new("RGB", (64, 64))
    r = render_text(img, "abcdefghij", np.random.default_rng(0), size_frac=(0.5, 0.5))
    assert r["text_size"] < r["text_size_drawn_from"] and r["text_w"] <= 64
    with pytest.raises(TextDoesNotFitError, match="does not fit"):
        render_text(Image.new("RGB", (64, 64)), "x" * 80, np.random.default_rng(0))


def test_unknown_font_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="font 'NoSuchFont.ttf' not found"):
        font_path("NoSuchFont.ttf")
    assert font_path("DejaVuSerif.ttf").endswith("DejaVuSerif.ttf")
