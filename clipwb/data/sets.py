"""The standard typographic sets of the workbench: a training set and two held-out evaluation sets.

- ``train``: attacks on training source images, written with the training fonts and words;
- ``test``: attacks on held-out source images (no source image shared with ``train``), same fonts and words;
- ``test_heldout``: the same held-out source images attacked with fonts and words never used in ``train``
  (``split_attacks``), to measure whether a defence generalises to unseen attacks;
- ``test_note``: the same held-out source images with the training words written as a note (dark ink on a light
  paper patch, as the handwritten notes of RTA-100), a style never used in training attacks;
- ``test_unseen`` (``AttackSetsConfig(unseen=True)``): the held-out images attacked with the held-out words in
  typefaces of Debian's fonts-open-sans and fonts-cantarell, which nothing else uses, the controls with words outside
  every word list: how much of a defence's gain survives an attack family it never saw in any respect;
- ``val`` (when asked for, ``n_val``): a validation split attacked as ``train`` and ``test`` are, on source images
  in neither (the world's ``val`` split; for image folders, sources carved from the training ones and recorded),
  on which open strengths (PAINT's alpha, the steering map's t) are chosen, so that no test image and no image a
  model was trained on chooses them.

Every variant also has a control image: a word that is no class name, drawn exactly as the attack's class name
(same font, size, colours and centre), so that "what reading costs" is separated from "what text costs".

Sources are the embedded world (its ``train`` and ``test`` splits, disjoint by construction) or an image folder
(split by source image with ``split_items``). Builds are cached under ``<root>/<name>-<hash>``; a finished build
is reused, an interrupted one resumes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import config_hash
from .builders import (BuildResult, SourceItem, TypoBuildConfig, build_typographic, check_image_size, folder_source,
                       split_items, world_source)
from .typographic import (REFERENCE_SIZE_FRAC, TYPO_FONTS, UNSEEN_CONTROL_WORDS, TypoRenderConfig, split_attacks,
                          unseen_fonts)

SET_NAMES = ("train", "val", "test", "test_heldout", "test_note", "test_unseen")


@dataclass(frozen=True)
class AttackSetsConfig:
    k: int = 1  # variants per training source image
    k_test: int = 1  # variants per held-out source image
    seed: int = 0
    word_frac: float = 0.25  # share of class names held out as written words
    size_frac: tuple[float, float] | None = None  # None: the world's text scale (world) or the reference recipe
    image_size: int | None = None  # folder sources: resize + centre crop side (None keeps sizes)
    fonts: tuple[str, ...] = TYPO_FONTS
    placement: str | None = None  # None: the world's text_placement (world), "anywhere" (folders)
    control: bool = True  # write a control image (non-class word) per variant
    note: bool = True  # build the note-style held-out set ``test_note``
    # build ``test_unseen``: held-out images attacked with the held-out words in typefaces of fonts-open-sans and
    # fonts-cantarell (used nowhere else), controls with words outside every word list
    unseen: bool = False

    def __post_init__(self):
        for name in ("k", "k_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 typographic variants per image, got {getattr(self, name)}")
        if not 0 < self.word_frac < 1:
            raise ValueError(f"word_frac must lie in (0, 1), got {self.word_frac}")
        check_image_size(self.image_size)


def source_items(source: str, *, world=None, n_train: int | None = None, n_test: int | None = None,
                 classes_file: str | None = None, test_frac: float = 0.2, seed: int = 0,
                 progress: bool = True) -> tuple[list[SourceItem], list[SourceItem], tuple[str, ...]]:
    """(train items, held-out items, classes) from ``"world"`` or an image-folder root. For folders, ``n_train``
    / ``n_test`` cap the two parts (None: all)."""
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be >= 1 source images (or None: all), got {n}")
    if source == "world":
        if world is None or n_train is None or n_test is None:
            raise ValueError("the world source needs world=World(...), n_train and n_test")
        train, classes = world_source(world, n_train, "train", progress=progress)
        test, _ = world_source(world, n_test, "test", progress=progress)
        return train, test, classes
    items, classes = folder_source(source, classes_file)
    train, test = split_items(items, test_frac, seed)
    return train[:n_train], test[:n_test], classes


def val_items(source: str, train_items: list[SourceItem], n_val: int, *, world=None, seed: int = 0,
              progress: bool = True) -> tuple[list[SourceItem], list[SourceItem]]:
    """(training items, validation items): ``n_val`` images of the world's ``val`` split (the training items
    unchanged), or, for image folders, ``n_val`` source images carved from the training items (seeded; they leave
    the training items)."""
    if n_val < 1:
        raise ValueError(f"n_val must be >= 1 validation source images, got {n_val}")
    if source == "world":
        val, _ = world_source(world, n_val, "val", progress=progress)
        return train_items, val
    sources = sorted({it.source for it in train_items})
    if n_val >= len(sources):
        raise ValueError(f"n_val={n_val} would take every one of the {len(sources)} training source images: lower "
                         f"n_val")
    picked = set(np.random.default_rng([seed, 5]).permutation(sources)[:n_val].tolist())
    return [it for it in train_items if it.source not in picked], [it for it in train_items if it.source in picked]


def build_attack_sets(train_items: list[SourceItem], test_items: list[SourceItem], classes, root: str | Path,
                      cfg: AttackSetsConfig | None = None, world=None, progress: bool = True,
                      val: list[SourceItem] | None = None) -> dict[str, BuildResult]:
    """Build (or reuse) the standard sets under ``root`` (and ``val`` from its items when given); returns
    ``{name: BuildResult}``."""
    cfg = cfg or AttackSetsConfig()
    parts = {"training": train_items, "held-out": test_items, "validation": val or []}
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = {it.source for it in parts[a]} & {it.source for it in parts[b]}
            if shared:
                raise ValueError(f"{len(shared)} source images are in both the {a} and {b} items, e.g. "
                                 f"{sorted(shared)[:2]}: split by source first (split_items, val_items)")
    size_frac = cfg.size_frac or (world.config.text_size if world is not None else REFERENCE_SIZE_FRAC)
    placement = cfg.placement or (world.config.text_placement if world is not None else "anywhere")
    sp = split_attacks(classes, fonts=cfg.fonts, word_frac=cfg.word_frac, seed=cfg.seed)
    words = lambda idx: tuple(classes[i] for i in idx)  # noqa: E731

    def plan(items, k, seed, fonts, written, style="plain", control_words=None):
        render = TypoRenderConfig(fonts=fonts, size_frac=size_frac, style=style, placement=placement)
        return items, TypoBuildConfig(k=k, seed=seed, image_size=cfg.image_size, render=render,
                                      written_classes=words(written), control=cfg.control,
                                      control_words=control_words)

    plans = {
        "train": plan(train_items, cfg.k, cfg.seed, sp.train_fonts, sp.train_words),
        "test": plan(test_items, cfg.k_test, cfg.seed + 1, sp.train_fonts, sp.train_words),
        "test_heldout": plan(test_items, cfg.k_test, cfg.seed + 2, sp.test_fonts, sp.test_words),
    }
    if cfg.note:
        plans["test_note"] = plan(test_items, cfg.k_test, cfg.seed + 3, sp.train_fonts, sp.train_words, "note")
    if val:
        plans["val"] = plan(val, cfg.k_test, cfg.seed + 4, sp.train_fonts, sp.train_words)
    if cfg.unseen:
        plans["test_unseen"] = plan(test_items, cfg.k_test, cfg.seed + 6, unseen_fonts(), sp.test_words,
                                    control_words=UNSEEN_CONTROL_WORDS)
    out = {}
    for name, (items, bcfg) in plans.items():
        key = config_hash(bcfg, list(classes), [it.identity() for it in items])
        out[name] = build_typographic(items, classes, Path(root) / f"{name}-{key}", bcfg, progress=progress)
    return out


def resolve_unseen(unseen: bool | None) -> bool:
    """A notebook's ``unseen`` parameter: None builds the unseen attack family where its fonts are installed and
    says so in one line where they are not; True requires them (a clear error naming the packages)."""
    if unseen is None:
        if unseen_fonts(required=False):
            return True
        print("the unseen attack family (test_unseen) is skipped: its fonts are missing (sudo apt-get install "
              "fonts-open-sans fonts-cantarell)")
        return False
    if unseen:
        unseen_fonts(required=True)
    return bool(unseen)


def attack_arrays(source: str = "world", *, world=None, n_train: int | None = None, n_test: int | None = None,
                  cfg: AttackSetsConfig | None = None, root: str | Path | None = None, classes_file: str | None = None,
                  progress: bool = True, storage: str = "memory", n_val: int = 0,
                  ) -> tuple[tuple[str, ...], dict[str, dict], dict[str, BuildResult]]:
    """Build (or reuse) the standard sets and load them as arrays: ``(classes, {set: arrays}, {set: build})``.
    ``root`` defaults to ``<clipwb cache>/datasets``. ``storage="disk"`` gives the same sets with their images as
    ``data.store.DiskArray`` files written once beside each build (memory bounded by a batch, not the set: the
    choice for ImageNet-scale folders); ``"memory"`` stacks them in RAM. ``n_val`` > 0 adds the ``val`` set
    (``val_items``)."""
    if storage not in ("memory", "disk"):
        raise ValueError(f"storage must be 'memory' or 'disk', got {storage!r}")
    from ..fileio import cache_dir
    from .builders import TypographicDataset

    cfg = cfg or AttackSetsConfig()
    train, test, classes = source_items(source, world=world, n_train=n_train, n_test=n_test,
                                        classes_file=classes_file, seed=cfg.seed, progress=progress)
    val = None
    if n_val:
        train, val = val_items(source, train, n_val, world=world, seed=cfg.seed, progress=progress)
    builds = build_attack_sets(train, test, classes, Path(root or cache_dir() / "datasets"), cfg, world=world,
                               progress=progress, val=val)
    load = (lambda ds: ds.stored(progress=progress)) if storage == "disk" else (lambda ds: ds.arrays(progress=progress))
    arrays = {n: load(TypographicDataset(b.out_dir, world=world)) for n, b in builds.items()}
    return classes, arrays, builds


EVAL_LAYOUTS = ("an image folder root/<class>/<image>.jpg|png (the ImageNet-100 / Food-101 layout), or a real "
                "typographic set: root/labels.csv with header 'file,true,written' and the images under root")


def eval_layout(path: str | Path, attack: str = "none") -> str:
    """"labels.csv" (a real typographic set) or "image folder"; a clear error, at once, for anything else or for an
    attack that does not apply."""
    if attack not in ("none", "typographic", "note"):
        raise ValueError(f"attack must be none, typographic or note, got {attack!r}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: no such folder; expected {EVAL_LAYOUTS}")
    if (root / "labels.csv").is_file():
        if attack != "typographic":
            raise ValueError(f"{root} is a real typographic set (labels.csv): its images already carry the written "
                             f"word, so only --attack typographic applies (got {attack!r})")
        return "labels.csv"
    if not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        raise ValueError(f"--data {root} has neither labels.csv nor class folders: expected {EVAL_LAYOUTS}")
    return "image folder"


def eval_arrays(path: str | Path, attack: str = "none", *, size: int = 224, n: int | None = None, seed: int = 0,
                classes_file: str | None = None, progress: bool = False) -> dict:
    """The images of ``path`` to score zero-shot, as {"images", "true", "written" (attacks only), "classes",
    "layout", "skipped_corrupt"}.

    - a real typographic set (``path/labels.csv``, ``data.real``): its images as they are (they carry the attack);
      only ``attack="typographic"`` applies;
    - an image folder (``path/<class>/*``): ``n`` seeded images (None: all); ``attack="none"`` scores them clean,
      ``"typographic"`` writes another class name on each (the reference recipe), ``"note"`` writes it on a paper
      patch (the RTA-100 style), seeded per image.

    A path in neither layout fails at once, naming both."""
    from PIL import Image

    from .builders import load_fitted
    from .real import load_real_typographic
    from .typographic import make_attack

    root = Path(path).expanduser()
    if eval_layout(root, attack) == "labels.csv":
        rs = load_real_typographic(root)
        arr = rs.arrays(size, progress)
        return {"images": arr["typo"], "true": arr["true"], "written": arr["written"], "classes": rs.classes,
                "layout": "labels.csv", "skipped_corrupt": arr["skipped_corrupt"]}
    items, classes = folder_source(root, classes_file)
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1 images (or None: all), got {n}")
        pick = np.sort(np.random.default_rng([seed, 11]).permutation(len(items))[:n])
        items = [items[i] for i in pick]
    imgs, keep, skipped = load_fitted([it.source for it in items], size, progress, "loading images",
                                      names=[it.image_id for it in items])
    if not keep:
        raise ValueError(f"none of the {len(items)} images under {root} could be read (e.g. {skipped[:2]})")
    true = np.array([items[i].label for i in keep])
    out = {"true": true, "classes": classes, "layout": "image folder", "skipped_corrupt": skipped}
    if attack == "none":
        return {**out, "images": np.stack(imgs)}
    cfg = TypoRenderConfig(style="note" if attack == "note" else "plain")
    attacked, written = [], []
    for img, i in zip(imgs, keep):
        a, rec = make_attack(Image.fromarray(img), int(items[i].label), classes, seed=seed, image_id=items[i].image_id,
                             variant=0, cfg=cfg)
        attacked.append(np.asarray(a))
        written.append(rec["written_label"])
    return {**out, "images": np.stack(attacked), "written": np.array(written)}
