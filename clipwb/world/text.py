"""Writing words onto images with real fonts (the world's text; the typographic renderer builds on it).

Follows the typographic recipe of the PO reference (spec po_clip.md): a font from a set, a size drawn from a
range and shrunk one point at a time until the text fits, a uniform random top-left position, a fill and a
1-px stroke in two different colours of eight named ones, and the line-splitting rule for multi-word names.
Every random choice comes from the caller's numpy Generator and is returned as a record.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXT_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "blue": (0, 0, 255), "green": (0, 160, 0), "red": (255, 0, 0),
    "magenta": (255, 0, 255), "cyan": (0, 255, 255), "yellow": (255, 255, 0), "black": (0, 0, 0),
}

DEFAULT_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
)


class TextDoesNotFitError(ValueError):
    pass


def font_path(font: str) -> str:
    """Resolve a font name to a .ttf path: an existing path is used as is; a bare DejaVu file name is found
    in matplotlib's bundled fonts (always installed with clipwb), then in Debian's fonts-dejavu-core."""
    if os.path.isfile(font):
        return font
    import matplotlib

    for folder in (Path(matplotlib.get_data_path()) / "fonts" / "ttf", Path("/usr/share/fonts/truetype/dejavu")):
        cand = folder / font
        if cand.is_file():
            return str(cand)
    raise FileNotFoundError(
        f"font {font!r} not found: pass a path to a .ttf file, or one of the bundled DejaVu names "
        f"{list(DEFAULT_FONTS)}")


@functools.lru_cache(maxsize=512)
def load_font(font: str, size: int) -> ImageFont.FreeTypeFont:
    path = font_path(font)
    try:
        return ImageFont.truetype(path, size)
    except OSError as e:
        raise ValueError(f"{path} is not a font file FreeType can read ({e}): pass a .ttf/.otf font, or one of "
                         f"the bundled DejaVu names {list(DEFAULT_FONTS)}") from None


@functools.lru_cache(maxsize=64)
def _font_chars(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont  # fontTools comes with matplotlib

    with TTFont(path, lazy=True, fontNumber=0) as f:
        return frozenset(f.getBestCmap() or {})


@functools.lru_cache(maxsize=4096)
def missing_glyphs(text: str, font: str) -> str:
    """The characters of ``text`` (whitespace aside) that ``font`` has no glyph for (they would be drawn as boxes)."""
    path = font_path(font)
    load_font(font, 12)  # a clear error for a file that is no font
    try:
        have = _font_chars(path)
    except Exception:  # noqa: BLE001 - a font fontTools cannot parse but FreeType can: trust FreeType
        return ""
    return "".join(dict.fromkeys(ch for ch in text if not ch.isspace() and ord(ch) not in have))


def check_glyphs(texts, fonts) -> None:
    """ValueError naming every text that some font cannot draw (instead of silently drawing boxes)."""
    bad = {}
    for font in fonts:
        for t in texts:
            miss = missing_glyphs(str(t), font)
            if miss:
                bad.setdefault(Path(font).name, []).append(f"{t!r} lacks {miss!r}")
    if bad:
        detail = "; ".join(f"{f}: {', '.join(v[:3])}" + (f" (+{len(v) - 3} more)" if len(v) > 3 else "")
                           for f, v in bad.items())
        raise ValueError(f"the font cannot draw some words, they would appear as boxes: {detail}. Pass fonts that "
                         f"cover these characters (a .ttf path), or rename or transliterate the classes")


def split_lines(text: str) -> str:
    """The reference's rule: 2-3 words -> first word on line 1, the rest on line 2; more than 3 words ->
    two words on line 1, the rest on line 2; one word stays on one line."""
    words = text.split()
    if len(words) <= 1:
        return text
    if len(words) <= 3:
        return words[0] + "\n" + " ".join(words[1:])
    return " ".join(words[:2]) + "\n" + " ".join(words[2:])


def render_text(img: Image.Image, text: str, rng: np.random.Generator, *,
                fonts: tuple[str, ...] = DEFAULT_FONTS, size_frac: tuple[float, float] = (0.2, 0.32),
                min_size_px: int = 7, colors: tuple[str, ...] = tuple(TEXT_COLORS)) -> dict:
    """Write ``text`` onto ``img`` in place and return the record of every choice made.

    size_frac: font size range as a fraction of the image side (the reference's 20-40 pt at 224 px is
    (0.09, 0.18)); the drawn size is shrunk by 1 px until the text block fits inside the image.
    """
    W, H = img.size
    font = fonts[int(rng.integers(len(fonts)))]
    check_glyphs((text,), (font,))
    lo = max(min_size_px, int(round(size_frac[0] * min(W, H))))
    hi = max(lo, int(round(size_frac[1] * min(W, H))))
    size0 = int(rng.integers(lo, hi + 1))
    fill_name, stroke_name = rng.choice(len(colors), size=2, replace=False)
    fill_name, stroke_name = colors[int(fill_name)], colors[int(stroke_name)]
    body = split_lines(text)
    draw = ImageDraw.Draw(img)
    size = size0
    while True:
        f = load_font(font, size)
        x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), body, font=f, stroke_width=1, align="center")
        tw, th = x1 - x0, y1 - y0
        if tw <= W and th <= H:
            break
        size -= 1
        if size < min_size_px:
            raise TextDoesNotFitError(
                f"text {text!r} does not fit a {W}x{H} image even at {min_size_px} px: use a shorter text, "
                f"a larger image or a smaller min_size_px")
    x = int(rng.integers(0, W - tw + 1)) - x0
    y = int(rng.integers(0, H - th + 1)) - y0
    draw.multiline_text((x, y), body, font=f, fill=TEXT_COLORS[fill_name], stroke_width=1,
                        stroke_fill=TEXT_COLORS[stroke_name], align="center")
    return {"text": text, "text_font": Path(font).name, "text_size": size, "text_size_drawn_from": size0,
            "text_fill": fill_name, "text_stroke": stroke_name, "text_x": x + x0, "text_y": y + y0,
            "text_w": tw, "text_h": th}
