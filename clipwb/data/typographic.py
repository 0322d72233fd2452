"""The typographic-attack renderer of the PO reference (Afzali et al., ICLR 2025).

A wrong class name is written onto any PIL image: a font from a set (DejaVu Sans / Serif / Mono by default, any
.ttf path accepted), a size drawn from the reference's 20-40 pt at 224 px scaled to the image side and shrunk
one point at a time until the text fits, a uniform random top-left position, a fill and a 1-px stroke in two
different colours of the eight named ones, and the reference's line-splitting rule for multi-word names.
Every choice is drawn from a generator seeded by (seed, image id, variant) and returned as a record, from which
``draw_from_record`` redraws the same pixels.

``written_pool`` restricts the written word to a subset of the classes and ``split_attacks`` splits fonts and
words into disjoint training and held-out sets, for measuring whether a defence generalises to attacks it never
saw (fonts and words).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..world.generator import OTHER_WORDS, text_center_box
from ..world.text import STYLES, TEXT_COLORS, draw_text_block, font_path, load_font, render_text, split_lines

REFERENCE_SIZE_FRAC = (20 / 224, 40 / 224)  # randint(20, 40) pt on 224 px images
TYPO_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
# slanted faces: in neither the world's pretraining fonts nor TYPO_FONTS, the default held-out attack fonts
HELDOUT_FONTS = ("DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono-Oblique.ttf")
# control words: written exactly as an attack writes a class name, but no class name (what text costs by itself)
CONTROL_WORDS = OTHER_WORDS
# the unseen attack family (``test_unseen``): typefaces of two Debian packages that neither the world, pretraining
# nor any training or held-out attack uses, and control words outside every word list of the workbench
UNSEEN_FONT_PACKAGES = ("fonts-open-sans", "fonts-cantarell")
UNSEEN_FONTS = ("/usr/share/fonts/truetype/open-sans/OpenSans-Regular.ttf",
                "/usr/share/fonts/truetype/open-sans/OpenSans-Italic.ttf",
                "/usr/share/fonts/opentype/cantarell/Cantarell-Regular.otf",
                "/usr/share/fonts/opentype/cantarell/Cantarell-Bold.otf")
UNSEEN_CONTROL_WORDS = ("lamp", "river", "piano", "garden", "window", "pencil", "ticket", "mirror", "candle", "violin")


def unseen_fonts(required: bool = True) -> tuple[str, ...]:
    """The unseen family's font files; where they are missing, a clear error naming the packages to install
    (``required=False``: an empty tuple instead, for callers that skip the family)."""
    import os

    missing = [f for f in UNSEEN_FONTS if not os.path.isfile(f)]
    if missing and required:
        raise FileNotFoundError(f"the unseen attack family needs the fonts of Debian's {' and '.join(UNSEEN_FONT_PACKAGES)} "
                                f"(missing: {missing[0]}, ...): sudo apt-get install {' '.join(UNSEEN_FONT_PACKAGES)}, "
                                f"or build the sets without it (AttackSetsConfig(unseen=False))")
    return () if missing else UNSEEN_FONTS
PLACEMENTS = ("anywhere", "object", "beside")


@dataclass(frozen=True)
class TypoRenderConfig:
    fonts: tuple[str, ...] = TYPO_FONTS
    size_frac: tuple[float, float] = REFERENCE_SIZE_FRAC
    min_size_px: int = 6
    colors: tuple[str, ...] = tuple(TEXT_COLORS)
    # "plain": coloured letters with a stroke (the reference recipe); "note": ink on a paper patch (RTA-100 style)
    style: str = "plain"
    # "anywhere": uniform top-left corner (the reference recipe); "object": the text's centre in the object's box
    # (world sources know it; for image files the central half of the image, where photos put their object);
    # "beside": the text's centre in the band above or below that box, whichever has more room (the world's rule)
    placement: str = "anywhere"

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if not self.fonts:
            raise ValueError("fonts is empty: give at least one DejaVu name or .ttf path")
        for f in self.fonts:
            load_font(f, 12)  # FileNotFoundError / ValueError naming the font and the fix
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
    from ..config import check_seed

    h = int(hashlib.sha256(str(image_id).encode()).hexdigest()[:15], 16)
    return np.random.default_rng([check_seed("seed", seed), h, check_seed("variant", variant)])


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


def check_pool(pool: Sequence[int] | None, n_classes: int) -> tuple[int, ...] | None:
    """Validate a written-word pool (class indices): at least two distinct indices of the class list, so that
    every true class has a different word to be written."""
    if pool is None:
        return None
    pool = tuple(int(i) for i in pool)
    bad = [i for i in pool if not 0 <= i < n_classes]
    if bad:
        raise ValueError(f"written pool indices {bad} are outside the class list of {n_classes} names")
    if len(set(pool)) != len(pool) or len(pool) < 2:
        raise ValueError(f"the written pool needs at least two distinct class indices, got {list(pool)}")
    return tuple(sorted(pool))


def control_words_for(classes) -> tuple[str, ...]:
    """CONTROL_WORDS minus any class name (case-insensitive): words that name no class of this class list."""
    names = {str(c).lower() for c in classes}
    words = tuple(w for w in CONTROL_WORDS if w not in names)
    if len(words) < 2:
        raise ValueError("the class list contains nearly all control words: pass control_words explicitly")
    return words


def make_attack(img: Image.Image, true_label: int, classes, *, seed: int, image_id: str | int, variant: int,
                cfg: TypoRenderConfig | None = None, written_pool: Sequence[int] | None = None,
                box: tuple[float, float, float, float] | None = None,
                control_words: Sequence[str] | None = None):
    """A copy of ``img`` (RGB) with a class name other than ``classes[true_label]`` written on it, and the record
    of every choice (written label, font, size, colours, position, seed, image id, variant).

    The written class is uniform over the other classes, or over ``written_pool`` (class indices) minus the true
    class when a pool is given (held-out words). ``box`` (x0, y0, x1, y1) is the object's box for the "object"
    and "beside" placements (default: the central half of the image).

    With ``control_words``, returns ``(attack, control, record)``: the control is the same image with a word of
    ``control_words`` (no class name) in place of the class name, drawn from the same generator state with the
    same font, size, colours and centre (``record["control_text"]`` names it)."""
    cfg = cfg or TypoRenderConfig()
    classes = check_classes(classes)
    if not 0 <= true_label < len(classes):
        raise ValueError(f"true_label {true_label} is outside the class list of {len(classes)} names")
    pool = check_pool(written_pool, len(classes))
    rng = variant_rng(seed, image_id, variant)
    if pool is None:
        k = int(rng.integers(len(classes) - 1))
        written = k + (k >= true_label)
    else:
        candidates = [c for c in pool if c != true_label]
        written = candidates[int(rng.integers(len(candidates)))]
    word = str(classes[written])
    control = None
    if control_words is not None:
        control = str(control_words[int(rng.integers(len(control_words)))])
        if control in classes:
            raise ValueError(f"control word {control!r} is a class name: control words must name no class")
    rgb = img.convert("RGB")
    W, H = rgb.size
    center_box = text_center_box(cfg.placement, box if box is not None else (W / 4, H / 4, 3 * W / 4, 3 * H / 4),
                                 W, H)
    kw = dict(fonts=cfg.fonts, size_frac=cfg.size_frac, min_size_px=cfg.min_size_px, colors=cfg.colors,
              fit_texts=(word, control) if control else (), center_box=center_box, style=cfg.style)
    state = rng.bit_generator.state
    out = rgb.copy()
    rec = render_text(out, word, rng, **kw)
    rec.update(true_label=int(true_label), written_label=int(written), seed=int(seed), image_id=str(image_id),
               variant=int(variant), text_font_path=font_path(rec_font(rec, cfg)))
    if control is None:
        return out, rec
    rng.bit_generator.state = state
    ctrl = rgb.copy()
    crec = render_text(ctrl, control, rng, **kw)
    rec.update(control_text=control, control_x=crec["text_x"], control_y=crec["text_y"], control_w=crec["text_w"],
               control_h=crec["text_h"])
    return out, ctrl, rec


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
    f = load_font(font_path(rec.get("text_font_path") or rec["text_font"]), int(rec["text_size"]))
    style = rec.get("text_style", "plain")
    block = tuple(int(rec[k]) for k in ("block_x", "block_y", "block_w", "block_h")) if style == "note" else None
    draw_text_block(ImageDraw.Draw(out), split_lines(rec["text"]), f, style, rec["text_fill"], rec["text_stroke"],
                    (int(rec["text_x"]), int(rec["text_y"])), block)
    return out


@dataclass(frozen=True)
class AttackSplit:
    """Disjoint fonts and written words for training attacks and for held-out attacks."""
    train_fonts: tuple[str, ...]
    test_fonts: tuple[str, ...]
    train_words: tuple[int, ...]  # class indices that may be written in training attacks
    test_words: tuple[int, ...]


def split_attacks(classes, fonts: Sequence[str] = TYPO_FONTS, heldout_fonts: Sequence[str] = HELDOUT_FONTS,
                  word_frac: float = 0.25, seed: int = 0) -> AttackSplit:
    """Hold out fonts and written words: training attacks use ``fonts`` and a random ``1 - word_frac`` of the
    class names as written words, held-out attacks use ``heldout_fonts`` and the remaining names. True classes
    are not split: every class is still attacked in both parts, only with words of its part."""
    classes = check_classes(classes)
    fonts, heldout_fonts = tuple(fonts), tuple(heldout_fonts)
    for f in fonts + heldout_fonts:
        font_path(f)
    shared = sorted({font_path(f) for f in fonts} & {font_path(f) for f in heldout_fonts})
    if shared or not fonts or not heldout_fonts:
        raise ValueError(f"training and held-out fonts must be non-empty and disjoint, shared: {shared}")
    n_test = int(round(word_frac * len(classes)))
    if len(classes) < 4:
        raise ValueError(f"held-out written words need at least 4 classes (two words for training attacks, two "
                         f"held out), got {len(classes)}: add classes")
    if not 2 <= n_test <= len(classes) - 2:
        raise ValueError(f"word_frac {word_frac} holds out {n_test} of {len(classes)} words: each part needs at "
                         f"least two; give a word_frac between {2 / len(classes):.2f} and "
                         f"{1 - 2 / len(classes):.2f} (AttackSetsConfig(word_frac=...), or `clipwb train-po "
                         f"--heldout-word-frac`)")
    perm = np.random.default_rng(seed).permutation(len(classes))
    return AttackSplit(fonts, heldout_fonts, tuple(sorted(perm[n_test:].tolist())),
                       tuple(sorted(perm[:n_test].tolist())))
