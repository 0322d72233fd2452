"""Person / face image folders with a CSV of labels (the layout of FairFace-like sets), for the real path of the
gender experiments:

    <root>/labels.csv   header: file,gender,<task attribute>   e.g. file,gender,occupation
    <root>/<file>       the images (``file`` relative to root)

Attribute values are names; each attribute's classes are its sorted distinct values unless given. Unreadable
images are skipped and counted.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

LAYOUT = "<root>/labels.csv with header 'file,gender,<attribute>' (e.g. occupation) and the images under <root>"


def load_person_folder(root: str | Path, attributes=("gender", "occupation"), size: int = 224,
                       classes: dict | None = None, progress: bool = False) -> dict:
    """{"images": uint8 (n, size, size, 3), "labels": {attr: int array}, "classes": {attr: names},
    "files": [...], "skipped_corrupt": [...]}."""
    from .builders import check_listed_files, load_fitted

    root = Path(root).expanduser()
    labels = root / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} not found. Expected {LAYOUT}")
    with labels.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a BOM is not part of the header
        reader = csv.DictReader(f)
        missing = {"file", *attributes} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{labels} lacks columns {sorted(missing)}; expected {LAYOUT}")
        rows = [r for r in reader if (r.get("file") or "").strip()]
    if not rows:
        raise ValueError(f"{labels} has no rows")
    classes = {a: tuple((classes or {}).get(a) or sorted({r[a].strip() for r in rows})) for a in attributes}
    for a in attributes:
        unknown = sorted({r[a].strip() for r in rows} - set(classes[a]))
        if unknown:
            raise ValueError(f"{labels}: {a} values {unknown[:5]} are not among the given classes {classes[a]}")
    check_listed_files(labels, root, [r["file"] for r in rows])
    imgs, kept, skipped = load_fitted([root / r["file"] for r in rows], size, progress, f"loading {root.name}",
                                      names=[r["file"] for r in rows])
    if not kept:
        raise ValueError(f"none of the {len(rows)} images under {root} could be read (e.g. {skipped[:2]}): "
                         f"expected image files (jpg, png, ...)")
    keep = [rows[i] for i in kept]
    return {"images": np.stack(imgs) if imgs else np.zeros((0, size, size, 3), np.uint8),
            "labels": {a: np.array([classes[a].index(r[a].strip()) for r in keep]) for a in attributes},
            "classes": classes, "files": [r["file"] for r in keep], "skipped_corrupt": skipped}
