"""Real typographic-attack sets (RTA-100, PAINT, Materzynska et al.'s "Disentangling"), given a local path.

These sets are photographs of objects with a word written on them (a sticky note, a sign): each image has a true
class and the written word. They are not downloadable from here, so clipwb reads one documented layout that
each of them converts to in a few lines:

    <root>/labels.csv     header: file,true,written   (one row per image; ``written`` may be empty)
    <root>/classes.txt    optional: the zero-shot class list, one name per line
                          (default: the sorted true labels)
    <root>/<file>         the images, ``file`` relative to root (any sub-folders)

``true`` and ``written`` are class *names*. A written word that is not in the class list still counts for
typographic top-1 (against the true class) but not for the attack-success rate, which needs the word among the
classifier's candidates. Unreadable images are skipped and counted, as in the builders.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .builders import check_listed_files
from .typographic import check_classes

REAL_SETS = {
    "rta-100": "RTA-100 (Azuma & Matsui 2023): 1000 photos, 100 classes, a wrong class name on a note",
    "paint": "PAINT typographic set (Ilharco et al. 2022): photos of objects with a handwritten wrong label",
    "disentangling": "Materzynska et al. 2022 'Disentangling visual and written concepts in CLIP': 180 photos",
}

LAYOUT = ("<root>/labels.csv with header 'file,true,written' (class names; file relative to root), the images "
          "under <root>, and optionally <root>/classes.txt (one class name per line)")


@dataclass
class RealTypographicSet:
    name: str
    root: Path
    classes: tuple[str, ...]
    files: list[str]
    true: np.ndarray  # class index per image
    written: np.ndarray  # class index of the written word, -1 when it is not a class (or empty)
    written_text: list[str] = field(default_factory=list)

    def __len__(self):
        return len(self.files)

    def arrays(self, size: int = 224, progress: bool = False) -> dict:
        """Images resized (shortest side) and centre-cropped to ``size`` as uint8 (n, size, size, 3), with labels;
        unreadable images are dropped and listed under ``skipped_corrupt``."""
        from .builders import load_fitted

        imgs, keep, skipped = load_fitted([self.root / f for f in self.files], size, progress,
                                            f"loading {self.name}", names=self.files)
        if not keep:
            raise ValueError(f"{self.name}: none of the {len(self.files)} images under {self.root} could be read "
                             f"(e.g. {skipped[:2]}): expected image files (jpg, png, ...)")
        keep = np.array(keep, dtype=int)
        return {"typo": np.stack(imgs) if imgs else np.zeros((0, size, size, 3), np.uint8),
                "true": self.true[keep], "written": self.written[keep], "skipped_corrupt": skipped}


def load_real_typographic(root: str | Path, name: str | None = None) -> RealTypographicSet:
    """Read a real typographic set laid out as in the module docstring; ``name`` is a label for reports
    (one of ``REAL_SETS`` or anything)."""
    root = Path(root).expanduser()
    name = name or root.name
    what = REAL_SETS.get(name.lower(), name)
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: {root} does not exist. Expected {LAYOUT}. Download the set and write "
                                f"its labels.csv in that layout (see clipwb/data/real.py)")
    labels = root / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{what}: {labels} is missing. Expected {LAYOUT}")
    with labels.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a BOM is not part of the header
        reader = csv.DictReader(f)
        missing = {"file", "true"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{labels} lacks columns {sorted(missing)}: its header must be 'file,true,written'")
        rows = [r for r in reader if (r.get("file") or "").strip()]
    if not rows:
        raise ValueError(f"{labels} has no rows: expected one 'file,true,written' row per image")
    cfile = root / "classes.txt"
    if cfile.is_file():
        classes = check_classes([ln.strip() for ln in cfile.read_text().splitlines() if ln.strip()])
    else:
        classes = check_classes(sorted({r["true"].strip() for r in rows}))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r["true"].strip() for r in rows} - set(index))
    if unknown:
        raise ValueError(f"{labels}: true labels {unknown[:5]} are not in the class list ({cfile.name if cfile.is_file() else 'sorted true labels'})")
    check_listed_files(labels, root, [r["file"] for r in rows])
    written_text = [(r.get("written") or "").strip() for r in rows]
    return RealTypographicSet(name, root, classes, [r["file"] for r in rows],
                              np.array([index[r["true"].strip()] for r in rows]),
                              np.array([index.get(w, -1) for w in written_text]), written_text)
