"""The typographic-attack renderer of the PO reference (spec po_clip.md, "Typographic rendering recipe").

A wrong class name is written onto any PIL image: a font from a set (DejaVu Sans / Serif / Mono by default, any
.ttf path accepted), a size drawn from the reference's 20-40 pt at 224 px scaled to the image side and shrunk
one point at a time until the text fits, a uniform random top-left position, a fill and a 1-px stroke in two
different colours of the eight named ones, and the reference's line-splitting rule for multi-word names.
Every choice is drawn from a generator seeded by (seed, image id, variant) and returned as a record, from which
``draw_from_record`` redraws the same pixels.

Issue 3 builds the dataset builders (world and image folders, resumable manifests, real typographic sets) on
this renderer; this module is the renderer alone.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..world.text import TEXT_COLORS, font_path, load_font, render_text, split_lines

REFERENCE_SIZE_FRAC = (20 / 224, 40 / 224)  # randint(20, 40) pt on 224 px images
TYPO_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")


@dataclass(frozen=True)
class TypoRenderConfig:
    fonts: tuple[str, ...] = TYPO_FONTS
    size_frac: tuple[float, float] = REFERENCE_SIZE_FRAC
    min_size_px: int = 6
    colors: tuple[str, ...] = tuple(TEXT_COLORS)

    def __post_init__(self):
        if not self.fonts:
            raise ValueError("fonts is empty: give at least one DejaVu name or .ttf path")
        for f in self.fonts:
            font_path(f)  # FileNotFoundError naming the font and the fix
        lo, hi = self.size_frac
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"size_frac must satisfy 0 < low <= high <= 1 (fractions of the image side), got "
                             f"{self.size_frac}")
        unknown = [c for c in self.colors if c not in TEXT_COLORS]
        if unknown or len(set(self.colors)) < 2:
            raise ValueError(f"colors must be at least two distinct names of {list(TEXT_COLORS)}, got "
                             f"{list(self.colors)}")


def variant_rng(seed: int, image_id: str | int, variant: int) -> np.random.Generator:
    """The generator of one typographic variant: a stable function of (seed, image id, variant), the same in
    every process (image ids are hashed with SHA-256, not Python's salted ``hash``)."""
    h = int(hashlib.sha256(str(image_id).encode()).hexdigest()[:15], 16)
    return np.random.default_rng([int(seed), h, int(variant)])


def check_classes(classes) -> tuple[str, ...]:
    classes = tuple(classes)
    if len(classes) < 2:
        raise ValueError(f"the class list needs at least two names to write a wrong one, got {list(classes)}")
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise ValueError(f"duplicate class names {dup}: each class must appear once")
    if any(not str(c).strip() for c in classes):
        raise ValueError("empty class name in the class list")
    return classes


def make_attack(img: Image.Image, true_label: int, classes, *, seed: int, image_id: str | int, variant: int,
                cfg: TypoRenderConfig | None = None) -> tuple[Image.Image, dict]:
    """A copy of ``img`` (RGB) with a class name other than ``classes[true_label]`` written on it, and the record
    of every choice (written label, font, size, colours, position, seed, image id, variant)."""
    cfg = cfg or TypoRenderConfig()
    classes = check_classes(classes)
    if not 0 <= true_label < len(classes):
        raise ValueError(f"true_label {true_label} is outside the class list of {len(classes)} names")
    rng = variant_rng(seed, image_id, variant)
    k = int(rng.integers(len(classes) - 1))
    written = k + (k >= true_label)
    out = img.convert("RGB").copy()
    rec = render_text(out, str(classes[written]), rng, fonts=cfg.fonts, size_frac=cfg.size_frac,
                      min_size_px=cfg.min_size_px, colors=cfg.colors)
    rec.update(true_label=int(true_label), written_label=int(written), seed=int(seed), image_id=str(image_id),
               variant=int(variant), text_font_path=font_path(rec_font(rec, cfg)))
    return out, rec


def rec_font(rec: dict, cfg: TypoRenderConfig) -> str:
    """The configured font entry whose file name the record holds."""
    for f in cfg.fonts:
        if font_path(f).endswith(rec["text_font"]):
            return f
    raise ValueError(f"font {rec['text_font']!r} of the record is not among {list(cfg.fonts)}")


def draw_from_record(img: Image.Image, rec: dict) -> Image.Image:
    """Redraw a record's text onto a copy of ``img``: the manifest alone reproduces the attacked image (a record
    read from a CSV manifest works too: numbers may be strings, the font a bundled name)."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    f = load_font(font_path(rec.get("text_font_path") or rec["text_font"]), int(rec["text_size"]))
    body = split_lines(rec["text"])
    x0, y0, _, _ = draw.multiline_textbbox((0, 0), body, font=f, stroke_width=1, align="center")
    draw.multiline_text((int(rec["text_x"]) - x0, int(rec["text_y"]) - y0), body, font=f, fill=TEXT_COLORS[rec["text_fill"]],
                        stroke_width=1, stroke_fill=TEXT_COLORS[rec["text_stroke"]], align="center")
    return out
