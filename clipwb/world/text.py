"""Writing words onto images with real fonts (the world's text; the typographic renderer builds on it).

Follows the typographic recipe of the PO reference (Afzali et al., ICLR 2025): a font from a set, a size drawn from a
range and shrunk one point at a time until the text fits, a uniform random top-left position, a fill and a
1-px stroke in two different colours of eight named ones, and the line-splitting rule for multi-word names.
Every random choice comes from the caller's numpy Generator and is returned as a record.
"""
from __future__ import annotations

import functools
import math
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


NOTE_PAPERS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 245), "cream": (247, 240, 214), "yellow": (250, 238, 150), "pink": (250, 214, 224),
    "blue": (214, 232, 250), "green": (218, 244, 214),
}
NOTE_INKS: dict[str, tuple[int, int, int]] = {"black": (20, 20, 20), "blue": (25, 45, 160), "red": (170, 25, 25)}
STYLES = ("plain", "note")


def _int_box(b) -> tuple[int, int, int, int]:
    """A text bbox in whole pixels, outward (Pillow gives float x for centred multi-line text)."""
    return (math.floor(b[0]), math.floor(b[1]), math.ceil(b[2]), math.ceil(b[3]))


def render_text(img: Image.Image, text: str, rng: np.random.Generator, *,
                fonts: tuple[str, ...] = DEFAULT_FONTS, size_frac: tuple[float, float] = (0.2, 0.32),
                min_size_px: int = 7, colors: tuple[str, ...] = tuple(TEXT_COLORS), fit_texts: tuple[str, ...] = (),
                center_box: tuple[float, float, float, float] | None = None, style: str = "plain") -> dict:
    """Write ``text`` onto ``img`` in place and return the record of every choice made.

    size_frac: font size range as a fraction of the image side (the reference's 20-40 pt at 224 px is
    (0.09, 0.18)); the drawn size is shrunk by 1 px until the text block fits inside the image.

    fit_texts: further texts that must fit at the same size, and whose widest block fixes the position range:
    rendering two words with the same generator state and the same ``fit_texts`` (e.g. an attack word and its
    control word) gives the same font, size, colours and centre; only the word differs. Without ``fit_texts``
    this is the reference recipe (uniform top-left corner of the text block).

    center_box: (x0, y0, x1, y1) in pixels: the block's centre is drawn in this box (clipped to where the block
    fits), e.g. the object's box to write on the object; None: anywhere.

    style: ``"plain"`` (fill and a 1-px stroke in two of ``colors``, the reference recipe) or ``"note"`` (dark ink
    on a light paper-coloured patch with a thin border, as the handwritten notes of RTA-100 / PAINT).
    """
    if style not in STYLES:
        raise ValueError(f"unknown text style {style!r}; use one of {STYLES}")
    W, H = img.size
    font = fonts[int(rng.integers(len(fonts)))]
    texts = tuple(dict.fromkeys((text,) + tuple(fit_texts)))
    check_glyphs(texts, (font,))
    lo = max(min_size_px, int(round(size_frac[0] * min(W, H))))
    hi = max(lo, int(round(size_frac[1] * min(W, H))))
    size0 = int(rng.integers(lo, hi + 1))
    if style == "plain":
        fill_name, stroke_name = rng.choice(len(colors), size=2, replace=False)
        fill_name, stroke_name = colors[int(fill_name)], colors[int(stroke_name)]
        sw = 1
    else:
        fill_name = list(NOTE_INKS)[int(rng.integers(len(NOTE_INKS)))]
        stroke_name = list(NOTE_PAPERS)[int(rng.integers(len(NOTE_PAPERS)))]  # the paper, for a note
        sw = 0
    pad = max(2, size0 // 4) if style == "note" else 0
    draw = ImageDraw.Draw(img)
    size = size0
    while True:
        f = load_font(font, size)
        boxes = {t: _int_box(draw.multiline_textbbox((0, 0), split_lines(t), font=f, stroke_width=sw,
                                                     align="center")) for t in texts}
        bw = max(b[2] - b[0] for b in boxes.values()) + 2 * pad
        bh = max(b[3] - b[1] for b in boxes.values()) + 2 * pad
        if bw <= W and bh <= H:
            break
        size -= 1
        pad = max(2, size // 4) if style == "note" else 0
        if size < min_size_px:
            raise TextDoesNotFitError(
                f"text {text!r} does not fit a {W}x{H} image even at {min_size_px} px: use a shorter text, "
                f"a larger image or a smaller min_size_px")
    if center_box is None:
        bx = int(rng.integers(0, W - bw + 1))
        by = int(rng.integers(0, H - bh + 1))
    else:  # the block's centre in center_box, clipped to where the block fits
        cx0, cy0, cx1, cy1 = center_box
        lo_x, hi_x = max(bw / 2, min(cx0, cx1)), min(W - bw / 2, max(cx0, cx1))
        lo_y, hi_y = max(bh / 2, min(cy0, cy1)), min(H - bh / 2, max(cy0, cy1))
        cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else float(np.clip((cx0 + cx1) / 2, bw / 2, W - bw / 2))
        cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else float(np.clip((cy0 + cy1) / 2, bh / 2, H - bh / 2))
        bx, by = int(round(cx - bw / 2)), int(round(cy - bh / 2))
    x0, y0, x1, y1 = boxes[text]
    tw, th = x1 - x0, y1 - y0
    # the text is centred in the common block (for one text without a note patch: the block is the text)
    tx = bx + pad + (bw - 2 * pad - tw) // 2
    ty = by + pad + (bh - 2 * pad - th) // 2
    body = split_lines(text)
    rec = {"text": text, "text_font": Path(font).name, "text_size": size, "text_size_drawn_from": size0,
           "text_style": style, "text_fill": fill_name, "text_stroke": stroke_name, "text_x": tx, "text_y": ty,
           "text_w": tw, "text_h": th, "block_x": bx, "block_y": by, "block_w": bw, "block_h": bh}
    draw_text_block(draw, body, f, style, fill_name, stroke_name, (tx, ty), (bx, by, bw, bh))
    return rec


def draw_text_block(draw: ImageDraw.ImageDraw, body: str, font: ImageFont.FreeTypeFont, style: str, fill_name: str,
                    stroke_name: str, text_xy: tuple[int, int], block: tuple[int, int, int, int]) -> None:
    """Draw one rendered text (the recorded choices of ``render_text``): ``body`` with its bbox's top-left at
    ``text_xy``; for ``style="note"`` first the paper patch ``block`` = (x, y, w, h) with its border. Shared by
    ``render_text`` and the typographic builder's redraw from a manifest, so both draw the same pixels."""
    note = style == "note"
    sw = 0 if note else 1
    x0, y0, _, _ = _int_box(draw.multiline_textbbox((0, 0), body, font=font, stroke_width=sw, align="center"))
    if note:
        bx, by, bw, bh = block
        paper = NOTE_PAPERS[stroke_name]
        draw.rectangle((bx, by, bx + bw - 1, by + bh - 1), fill=paper, outline=tuple(int(c * 0.75) for c in paper))
        fill, stroke = NOTE_INKS[fill_name], None
    else:
        fill, stroke = TEXT_COLORS[fill_name], TEXT_COLORS[stroke_name]
    draw.multiline_text((text_xy[0] - x0, text_xy[1] - y0), body, font=font, fill=fill, stroke_width=sw,
                        stroke_fill=stroke, align="center")
