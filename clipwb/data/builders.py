"""Typographic dataset builders: k attacked variants per source image, written to disk with a manifest.

Sources are the embedded world (``world_source``) or an image folder laid out as ``root/<class>/*.jpg|png``
(``folder_source``; the layout of ImageNet-100 and Food-101, with an optional class-names file). Each source image
gets ``k`` variants whose written class differs from the true class (``typographic.make_attack``), saved as PNG
under ``out_dir/images``; the manifest (``out_dir/manifest.csv``) has one row per variant: source, true and
written label, font, size, colours, position, seed, file.

Building is resumable and idempotent: work is done in chunks, each chunk's images and manifest part are written
atomically, a restarted build skips finished chunks, and a finished build (``done.json`` with the same config
hash) returns at once. Corrupt or unreadable source images are skipped, counted and listed in the result.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import config_hash
from ..fileio import atomic_write, atomic_write_text
from ..world.text import check_glyphs
from .typographic import TypoRenderConfig, check_classes, check_pool, control_words_for, make_attack

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MANIFEST_FIELDS = ("file", "source", "image_id", "variant", "true_label", "written_label", "text", "text_font",
                   "text_size", "text_fill", "text_stroke", "text_x", "text_y", "text_w", "text_h", "seed",
                   "text_style", "block_x", "block_y", "block_w", "block_h", "control_file", "control_text")


@dataclass(frozen=True)
class TypoBuildConfig:
    k: int = 1  # typographic variants per source image
    seed: int = 0
    image_size: int | None = None  # resize shortest side + centre crop (reference: 224); None keeps the size
    chunk: int = 256  # source images per resumable chunk
    render: TypoRenderConfig = field(default_factory=TypoRenderConfig)
    written_classes: tuple[str, ...] | None = None  # names that may be written (held-out words); None: all
    # also write each variant's control image: a non-class word drawn exactly as the attack's class name
    control: bool = True
    control_words: tuple[str, ...] | None = None  # the controls' words (None: the world's other words)

    def written_pool(self, classes) -> tuple[int, ...] | None:
        if self.written_classes is None:
            return None
        unknown = [w for w in self.written_classes if w not in classes]
        if unknown:
            raise ValueError(f"written_classes {unknown} are not in the class list {list(classes)[:8]}...")
        return check_pool([list(classes).index(w) for w in self.written_classes], len(classes))

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1 typographic variants per image, got {self.k}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        check_image_size(self.image_size)


MIN_IMAGE_SIZE = 16


def check_image_size(size: int | None, name: str = "image_size") -> None:
    if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool)
                             or size < MIN_IMAGE_SIZE):
        raise ValueError(f"{name} must be None (keep the sizes) or an integer side of at least "
                         f"{MIN_IMAGE_SIZE} px, got {size!r}: the size is wrong, not the images")


def visible(p: Path) -> bool:
    """Hidden files and folders (``.ipynb_checkpoints``, ``.DS_Store``, ``._x.jpg``) are never data."""
    return not p.name.startswith(".")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, faithfully: 16- and 32-bit integer images (16-bit PNG, TIFF) are scaled to
    0..255 instead of being clipped to white by ``convert("RGB")``; images with transparency (RGBA, LA, P with a
    transparent colour) are composited over a white background, as a browser shows them, instead of having their
    alpha channel dropped (which reveals whatever colour the transparent pixels happen to hold)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max())
        if im.mode == "I" and a.max(initial=0) <= 255 and a.min(initial=0) >= 0:
            top = 255.0  # an 8-bit image stored as int32
        a = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = a / 255.0 if a.max(initial=0) > 1.0 else a
        return Image.fromarray(np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info) or \
            (im.mode in ("L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB (``to_rgb``), fully read (the file is closed on return)."""
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


@dataclass
class SourceItem:
    image_id: str
    label: int
    source: str  # a file path, or "world:<split>:<index>"
    _image: Image.Image | None = None
    box: tuple[float, float, float, float] | None = None  # the object's box in pixels, when known (world)

    def load(self) -> Image.Image:
        if self._image is not None:
            return self._image
        return open_rgb(self.source)

    def identity(self) -> tuple:
        """What a cached build depends on: id, label, source and, for files, their size and modification time
        (an image replaced under the same name makes a new build)."""
        if self._image is not None or self.source.startswith("world:"):
            return (self.image_id, self.label, self.source)
        try:
            st = Path(self.source).stat()
            return (self.image_id, self.label, self.source, st.st_size, st.st_mtime_ns)
        except OSError:
            return (self.image_id, self.label, self.source, None)


@dataclass(eq=False)
class PreferencePairs(Mapping):
    """A typographic set as arrays, the container between data, training and evaluation: attacked images ``typo``
    (preferred answer ``true``, dispreferred ``written``), their clean sources ``clean`` (the KL set), optionally
    the ``control`` images (a non-class word drawn the same way) and the ``source`` of each pair. Read-only
    mapping access (``pairs["typo"]``, ``"control" in pairs``) lists the arrays present."""
    clean: np.ndarray  # uint8 (n, H, W, 3)
    typo: np.ndarray  # uint8 (n, H, W, 3)
    true: np.ndarray  # int (n,)
    written: np.ndarray  # int (n,)
    control: np.ndarray | None = None  # uint8 (n, H, W, 3)
    source: list[str] | None = None

    def _present(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: str):
        if key not in self._present():
            raise KeyError(f"{key!r}: this set holds {self._present()}")
        return getattr(self, key)

    def __iter__(self):
        return iter(self._present())

    def __len__(self) -> int:  # as a mapping: the number of arrays; the number of pairs is ``n``
        return len(self._present())

    @property
    def n(self) -> int:
        return len(self.typo)


@dataclass
class BuildResult:
    out_dir: Path
    n_images: int
    n_variants: int
    skipped_corrupt: list[str]
    build_seconds: float
    resumed_chunks: int = 0
    already_done: bool = False


def world_source(world, n: int, split: str = "train", start: int = 0,
                 progress: bool = False) -> tuple[list[SourceItem], tuple[str, ...]]:
    """``n`` object images of the world's ``split`` (indices ``start``..``start+n-1``) as build sources."""
    batch = world.generate(n, split, "object", start=start, progress=progress)
    from ..world.generator import object_box

    S = world.config.image_size
    items = [SourceItem(f"world-{split}-{r['index']}", r["label"], f"world:{split}:{r['index']}",
                        Image.fromarray(img), object_box(r, S)) for img, r in zip(batch.images, batch.records)]
    return items, tuple(world.classes)


def folder_source(root: str | Path, classes_file: str | Path | None = None) -> tuple[list[SourceItem], tuple[str, ...]]:
    """``root/<class folder>/*.jpg|png``; class names are the folder names, or the lines of ``classes_file``
    (one name per line, in sorted folder order, or ``folder<TAB>name`` lines)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist: expected root/<class>/<image>.jpg|png "
                                f"(the ImageNet-100 / Food-101 layout)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and visible(p))
    if not folders:
        raise ValueError(f"{root} has no class folders: expected root/<class>/<image>.jpg|png")
    names = [p.name for p in folders]
    if classes_file is not None:
        lines = [ln.rstrip("\n") for ln in Path(classes_file).read_text().splitlines() if ln.strip()]
        if all("\t" in ln for ln in lines):
            mapping = dict(ln.split("\t", 1) for ln in lines)
            missing = [f for f in names if f not in mapping]
            if missing:
                raise ValueError(f"{classes_file} names no class for folders {missing[:5]}")
            names = [mapping[f] for f in names]
        elif len(lines) == len(folders):
            names = lines
        else:
            raise ValueError(f"{classes_file} has {len(lines)} names for {len(folders)} class folders: give one "
                             f"name per folder in sorted folder order, or 'folder<TAB>name' lines")
    classes = check_classes(names)
    items = [SourceItem(str(f.relative_to(root)), label, str(f))
             for label, folder in enumerate(folders)
             for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES and visible(f)]
    if not items:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<class>/")
    return items, classes


def _fit(img: Image.Image, size: int | None) -> Image.Image:
    check_image_size(size)
    if size is None:
        return img
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def check_listed_files(labels, root: Path, files: list[str]) -> None:
    """Every file a ``labels.csv`` names must exist under ``root`` (paths relative to it): one clear error otherwise."""
    absent = [f for f in files if not (Path(root) / f).is_file()]
    if absent:
        raise FileNotFoundError(f"{labels} names {len(absent)} of {len(files)} files that do not exist under {root}, "
                                f"e.g. {absent[:3]}: the 'file' column holds paths relative to {root}")


def load_fitted(paths, size: int | None, progress: bool = False, desc: str = "loading images", names=None):
    """Open each path as RGB, resize and centre-crop it to ``size`` (``_fit``); unreadable images are skipped.
    Returns (uint8 images, indices of the loaded paths, ["name: error" of the skipped ones]); ``names`` (default:
    the paths) label the skipped ones."""
    from ..progress import tqdm

    check_image_size(size)  # a wrong size is the caller's error, not every image's
    imgs, keep, skipped = [], [], []
    for i, p in enumerate(tqdm(paths, disable=not progress, desc=desc)):
        try:
            imgs.append(np.asarray(_fit(open_rgb(p), size)))
            keep.append(i)
        except Exception as e:  # noqa: BLE001 - unreadable images are skipped and reported
            skipped.append(f"{p if names is None else names[i]}: {type(e).__name__}")
    return imgs, keep, skipped


def _save_png(img: Image.Image, path: Path) -> None:
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def build_typographic(items: list[SourceItem], classes, out_dir: str | Path, cfg: TypoBuildConfig | None = None,
                      progress: bool = True) -> BuildResult:
    """Write ``cfg.k`` typographic variants of every item into ``out_dir`` (see the module docstring)."""
    from ..progress import tqdm

    cfg = cfg or TypoBuildConfig()
    classes = check_classes(classes)
    if not items:
        raise ValueError("no source images to build from: check the source (an empty folder, or n = 0?)")
    pool = cfg.written_pool(classes)
    controls = (control_words_for(classes) if cfg.control_words is None else tuple(cfg.control_words)) \
        if cfg.control else None
    check_glyphs([classes[i] for i in (pool if pool is not None else range(len(classes)))], cfg.render.fonts)
    out_dir = Path(out_dir)
    key = config_hash(dataclasses.asdict(cfg), list(classes), [it.identity() for it in items])
    done_file = out_dir / "done.json"
    if done_file.is_file():
        done = json.loads(done_file.read_text())
        if done.get("key") != key:
            raise FileExistsError(f"{out_dir} holds a different finished build (config, classes or source "
                                  f"images differ, or a source image changed since): use another out_dir or delete it")
        return BuildResult(out_dir, done["n_images"], done["n_variants"], done["skipped_corrupt"],
                           done["build_seconds"], already_done=True)
    started = out_dir / "build.json"
    if started.is_file() and json.loads(started.read_text()).get("key") != key:
        raise FileExistsError(f"{out_dir} holds an unfinished build of another config: use another out_dir or "
                              f"delete it")
    atomic_write_text(started, json.dumps({"key": key, "config": dataclasses.asdict(cfg)}, default=str))
    parts = out_dir / "manifest.parts"
    t0 = time.time()
    chunks = [items[i:i + cfg.chunk] for i in range(0, len(items), cfg.chunk)]
    resumed = 0
    for c, chunk in enumerate(tqdm(chunks, disable=not progress, desc="typographic build")):
        part = parts / f"{c:05d}.json"
        if part.is_file():
            resumed += 1
            continue
        rows, skipped = [], []
        for it in chunk:
            try:
                src = it.load()
                img = _fit(src, cfg.image_size)
            except Exception as e:  # noqa: BLE001 - any unreadable image is skipped and reported
                skipped.append(f"{it.source}: {type(e).__name__}")
                continue
            # the object's box follows the resize (world sources are square: no crop offset)
            box = tuple(b * img.size[0] / src.size[0] for b in it.box) if it.box is not None else None
            for v in range(cfg.k):
                made = make_attack(img, it.label, classes, seed=cfg.seed, image_id=it.image_id, variant=v,
                                   cfg=cfg.render, written_pool=pool, box=box, control_words=controls)
                out, rec = made[0], made[-1]
                fname = f"images/{_safe(it.image_id)}_v{v}.png"
                _save_png(out, out_dir / fname)
                if cfg.control:
                    rec["control_file"] = f"images/{_safe(it.image_id)}_v{v}_ctrl.png"
                    _save_png(made[1], out_dir / rec["control_file"])
                rows.append({"file": fname, "source": it.source,
                             **{k: rec.get(k, "") for k in MANIFEST_FIELDS[2:]}})
        atomic_write_text(part, json.dumps({"rows": rows, "skipped": skipped}))
    rows, skipped = [], []
    for c in range(len(chunks)):
        data = json.loads((parts / f"{c:05d}.json").read_text())
        rows += data["rows"]
        skipped += data["skipped"]
    if not rows:
        raise ValueError(f"none of the {len(items)} source images could be read (e.g. {skipped[:2]}), so the build "
                         f"in {out_dir} is left unfinished: check the images")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out_dir / "manifest.csv", buf.getvalue())
    n_images = len({r["source"] for r in rows})
    secs = time.time() - t0
    atomic_write_text(done_file, json.dumps({"key": key, "n_images": n_images, "n_variants": len(rows),
                                             "skipped_corrupt": skipped, "build_seconds": secs,
                                             "classes": list(classes)}))
    return BuildResult(out_dir, n_images, len(rows), skipped, secs, resumed_chunks=resumed)


def _safe(image_id: str) -> str:
    """A file-name-safe, collision-free stem for an image id."""
    import hashlib

    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in image_id)[-60:]
    return f"{stem}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"


def read_manifest(out_dir: str | Path) -> list[dict]:
    out_dir = Path(out_dir)
    if not (out_dir / "done.json").is_file():
        raise FileNotFoundError(f"{out_dir} is not a finished typographic build (no done.json): run "
                                f"build_typographic first")
    with (out_dir / "manifest.csv").open() as f:
        return list(csv.DictReader(f))



def split_items(items: list[SourceItem], test_frac: float = 0.2, seed: int = 0) -> tuple[list[SourceItem], list[SourceItem]]:
    """Held-out split by source image: no source image is in both parts (variants of one image stay together)."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must lie in (0, 1), got {test_frac}")
    sources = sorted({it.source for it in items})
    rng = np.random.default_rng(seed)
    test_sources = set(rng.permutation(sources)[:max(1, int(round(test_frac * len(sources))))].tolist())
    return [it for it in items if it.source not in test_sources], [it for it in items if it.source in test_sources]


class TypographicDataset:
    """A finished build as a torch-style Dataset of (clean image, typographic image, true label, written label).

    Clean images are re-read from the source (image folders: the file, resized as at build time; world sources:
    regenerated by ``world``, which must be the World the build came from). ``transform`` (e.g. an open_clip
    preprocess) is applied to both images."""

    def __init__(self, out_dir: str | Path, world=None, transform=None):
        self.out_dir = Path(out_dir)
        self.rows = read_manifest(self.out_dir)
        cfg = json.loads((self.out_dir / "build.json").read_text())["config"]
        self.image_size = cfg.get("image_size")
        self.world, self.transform = world, transform
        if world is None and any(r["source"].startswith("world:") for r in self.rows):
            raise ValueError("this build comes from the embedded world: pass world=World(...) to regenerate clean "
                             "images")

    def __len__(self):
        return len(self.rows)

    def clean_image(self, row: dict) -> Image.Image:
        src = row["source"]
        if src.startswith("world:"):
            _, split, index = src.split(":")
            return self.world.sample(int(index), split, "object")[0]
        return _fit(SourceItem(row["image_id"], int(row["true_label"]), src).load(), self.image_size)

    def arrays(self, progress: bool = False) -> PreferencePairs:
        """The whole set as uint8 arrays (clean and typographic, (n, H, W, 3)) and int label arrays; each clean
        source image is loaded once for all its variants. Needs images of one size (world builds, or folder
        builds with ``image_size`` set)."""
        from ..progress import tqdm

        clean_by_source, clean, typo, control = {}, [], [], []
        has_control = all(r.get("control_file") for r in self.rows)
        for row in tqdm(self.rows, disable=not progress, desc="loading typographic set"):
            if row["source"] not in clean_by_source:
                clean_by_source[row["source"]] = np.asarray(self.clean_image(row))
            clean.append(clean_by_source[row["source"]])
            typo.append(np.asarray(Image.open(self.out_dir / row["file"]).convert("RGB")))
            if has_control:
                control.append(np.asarray(Image.open(self.out_dir / row["control_file"]).convert("RGB")))
        if len({a.shape for a in clean + typo + control}) > 1:
            raise ValueError(f"{self.out_dir}: images differ in size; build with image_size=<side> to stack them")
        return PreferencePairs(clean=np.stack(clean), typo=np.stack(typo),
                               true=np.array([int(r["true_label"]) for r in self.rows]),
                               written=np.array([int(r["written_label"]) for r in self.rows]),
                               control=np.stack(control) if has_control else None,
                               source=[r["source"] for r in self.rows])

    def stored(self, root: str | Path | None = None, progress: bool = False, verify: bool = True) -> PreferencePairs:
        """The set as ``PreferencePairs`` whose images are ``data.store.DiskArray`` files under ``root`` (default
        ``<build>/arrays``): written once, one image in memory at a time, and reused by later calls; training and
        evaluation then read a batch at a time, so memory does not grow with the set. Same content, bit for bit,
        as ``arrays()``. A stored set that is reused is checked first (``verify``: every array against its digest;
        always: ``labels.json`` and the array headers): a damaged one is named in one warning line and written
        again from the build."""
        from ..progress import tqdm
        from .store import DiskArrayWriter

        root = Path(root) if root is not None else self.out_dir / "arrays"
        has_control = all(r.get("control_file") for r in self.rows)
        names = ["clean", "typo"] + (["control"] if has_control else [])
        done = root / "labels.json"
        if done.is_file():
            reused = self._reuse_stored(root, names, verify)
            if reused is not None:
                return reused
        writers = {nm: DiskArrayWriter(root / nm) for nm in names}
        try:
            last = (None, None)
            for row in tqdm(self.rows, disable=not progress, desc="writing typographic set to disk"):
                if row["source"] != last[0]:
                    last = (row["source"], np.asarray(self.clean_image(row)))
                writers["clean"].append(last[1][None])
                writers["typo"].append(np.asarray(Image.open(self.out_dir / row["file"]).convert("RGB"))[None])
                if has_control:
                    writers["control"].append(
                        np.asarray(Image.open(self.out_dir / row["control_file"]).convert("RGB"))[None])
            if len({w.row_shape for w in writers.values()}) > 1:
                raise ValueError(f"{self.out_dir}: images differ in size; build with image_size=<side> to store them")
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        arrays = {nm: w.close() for nm, w in writers.items()}
        labels = {"rows": len(self.rows), "true": [int(r["true_label"]) for r in self.rows],
                  "written": [int(r["written_label"]) for r in self.rows], "source": [r["source"] for r in self.rows]}
        atomic_write_text(done, json.dumps(labels))
        return PreferencePairs(**arrays, true=np.array(labels["true"]), written=np.array(labels["written"]),
                               source=labels["source"])

    def _reuse_stored(self, root: Path, names: list[str], verify: bool) -> PreferencePairs | None:
        """The stored set under ``root`` if it is complete and intact, else None (a damaged one is removed with one
        warning line, so that ``stored`` writes it again)."""
        import logging

        from .store import DiskArray

        done = root / "labels.json"
        try:
            labels = json.loads(done.read_text())
            if labels.get("rows") != len(self.rows):
                return None
            arrays = {nm: DiskArray(root / nm) for nm in names}
            for a in arrays.values():
                if len(a) != len(self.rows):
                    raise ValueError(f"{a.path} holds {len(a)} rows for {len(self.rows)} pairs")
                if verify:
                    a.verify()
        except (ValueError, KeyError, TypeError, AttributeError, FileNotFoundError) as e:
            logging.getLogger("clipwb.data").warning("clipwb: the stored set under %s is damaged (%s); writing it "
                                                     "again from the build", root, str(e).splitlines()[0][:200])
            done.unlink(missing_ok=True)
            return None
        return PreferencePairs(**arrays, true=np.array(labels["true"]), written=np.array(labels["written"]),
                               source=labels["source"])

    @property
    def classes(self) -> list[str]:
        return json.loads((self.out_dir / "done.json").read_text())["classes"]

    def __getitem__(self, i: int):
        row = self.rows[i]
        clean = self.clean_image(row)
        typo = Image.open(self.out_dir / row["file"]).convert("RGB")
        if self.transform is not None:
            clean, typo = self.transform(clean), self.transform(typo)
        return clean, typo, int(row["true_label"]), int(row["written_label"])


def export_image_folder(images: np.ndarray, labels, classes, root: str | Path) -> Path:
    """Write uint8 images as ``root/<class>/<i>.png`` (the ImageNet-100 / Food-101 layout): turns world images into
    an image-folder dataset, to exercise the real-data path offline."""
    root = Path(root)
    classes = check_classes(classes)
    for i, (img, y) in enumerate(zip(images, labels)):
        _save_png(Image.fromarray(np.asarray(img)), root / classes[int(y)] / f"{i:06d}.png")
    return root
