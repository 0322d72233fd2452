"""Cartoon portraits: a face with a visible binary gender cue and an occupation cue (a hat).

Gender cue: "woman" = long hair falling beside the face and red lips; "man" = short hair and a moustache.
Occupation cue: a hat with a fixed shape and colour per occupation. Skin, hair and shirt colours, face size
and position vary at random. Coordinates are fractions of the image side.
"""
from __future__ import annotations

import numpy as np
from PIL import ImageDraw

GENDERS: tuple[str, ...] = ("man", "woman")
GENDER_ADJ = {"man": "male", "woman": "female"}
OCCUPATIONS: tuple[str, ...] = ("builder", "firefighter", "pilot", "nurse", "teacher", "chef")
# The synthetic stereotype of the world (a documented, configurable bias, not a claim about people):
STEREOTYPE = {"builder": "man", "firefighter": "man", "pilot": "man",
              "nurse": "woman", "teacher": "woman", "chef": "woman"}

SKIN = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (110, 70, 40)]
HAIR = {"black": (25, 20, 20), "brown": (100, 60, 25), "blond": (225, 190, 90), "gray": (150, 150, 150),
        "auburn": (150, 60, 30)}
SHIRT = [(60, 120, 200), (200, 60, 60), (60, 160, 90), (140, 90, 170), (230, 150, 40), (90, 90, 90)]


def draw_portrait(img, rng: np.random.Generator, gender: str, occupation: str, hat_alpha: float = 1.0) -> dict:
    """Draw a portrait onto ``img`` (RGB, background already painted) and return its factors. ``hat_alpha`` < 1
    blends the hat into the picture (a faint occupation cue); the random draws do not depend on it."""
    S = img.size[0]
    d = ImageDraw.Draw(img)
    cx = 0.5 + rng.uniform(-0.08, 0.08)
    cy = 0.58 + rng.uniform(-0.04, 0.04)
    sc = rng.uniform(0.85, 1.1)
    skin = int(rng.integers(len(SKIN)))
    hair_name = list(HAIR)[int(rng.integers(len(HAIR)))]
    hair = HAIR[hair_name]
    shirt = SHIRT[int(rng.integers(len(SHIRT)))]

    def box(x0, y0, x1, y1):  # face-relative box -> pixels
        return [S * (cx + sc * x0), S * (cy + sc * y0), S * (cx + sc * x1), S * (cy + sc * y1)]

    def poly(pts):
        return [(S * (cx + sc * x), S * (cy + sc * y)) for x, y in pts]

    fx, fy = 0.19, 0.23  # face half-width / half-height
    d.ellipse(box(-0.34, 0.26, 0.34, 0.7), fill=shirt)  # shoulders
    if gender == "woman":  # long hair behind the face, down to the shoulders
        d.ellipse(box(-0.27, -0.31, 0.27, 0.2), fill=hair)
        d.rectangle(box(-0.27, -0.05, 0.27, 0.36), fill=hair)
    d.ellipse(box(-fx, -fy, fx, fy), fill=SKIN[skin])
    if gender == "man":  # short hair on top of the head
        d.chord(box(-fx - 0.01, -fy - 0.03, fx + 0.01, fy * 0.4), 180, 360, fill=hair)
    for ex in (-0.075, 0.075):
        d.ellipse(box(ex - 0.025, -0.03, ex + 0.025, 0.02), fill=(20, 20, 20))
    if gender == "woman":
        d.ellipse(box(-0.06, 0.1, 0.06, 0.15), fill=(210, 20, 50))
    else:
        d.rectangle(box(-0.08, 0.08, 0.08, 0.12), fill=hair if hair_name != "blond" else (160, 110, 40))
        d.line(box(-0.05, 0.16, 0.05, 0.16), fill=(90, 30, 30), width=max(1, S // 64))
    top = -fy  # top of the head
    before_hat = img.copy() if hat_alpha < 1 else None
    if occupation == "builder":  # yellow hard hat
        d.chord(box(-0.22, top - 0.13, 0.22, top + 0.13), 180, 360, fill=(250, 210, 0))
        d.rectangle(box(-0.27, top - 0.01, 0.27, top + 0.03), fill=(250, 210, 0))
    elif occupation == "firefighter":  # red helmet, wide brim, gold badge
        d.chord(box(-0.22, top - 0.16, 0.22, top + 0.14), 180, 360, fill=(215, 20, 20))
        d.rectangle(box(-0.31, top - 0.01, 0.31, top + 0.04), fill=(170, 10, 10))
        d.ellipse(box(-0.04, top - 0.12, 0.04, top - 0.04), fill=(240, 200, 40))
    elif occupation == "pilot":  # navy peaked cap, gold band, black visor
        d.polygon(poly([(-0.23, top - 0.14), (0.23, top - 0.14), (0.19, top + 0.02), (-0.19, top + 0.02)]),
                  fill=(20, 30, 90))
        d.rectangle(box(-0.2, top - 0.04, 0.2, top), fill=(230, 190, 40))
        d.chord(box(-0.2, top - 0.02, 0.2, top + 0.08), 0, 180, fill=(10, 10, 10))
    elif occupation == "nurse":  # small white cap with a red cross
        d.polygon(poly([(-0.17, top - 0.12), (0.17, top - 0.12), (0.21, top + 0.03), (-0.21, top + 0.03)]),
                  fill=(250, 250, 250))
        d.rectangle(box(-0.015, top - 0.1, 0.015, top + 0.01), fill=(230, 0, 0))
        d.rectangle(box(-0.05, top - 0.06, 0.05, top - 0.03), fill=(230, 0, 0))
    elif occupation == "teacher":  # black mortarboard with a yellow tassel
        d.rectangle(box(-0.15, top - 0.08, 0.15, top + 0.02), fill=(15, 15, 15))
        d.polygon(poly([(-0.32, top - 0.1), (0, top - 0.2), (0.32, top - 0.1), (0, top - 0.02)]),
                  fill=(15, 15, 15))
        d.line(box(0.2, top - 0.1, 0.22, top + 0.08), fill=(250, 210, 0), width=max(1, S // 48))
    elif occupation == "chef":  # tall white toque
        d.rectangle(box(-0.15, top - 0.24, 0.15, top + 0.02), fill=(248, 248, 248))
        for px in (-0.11, 0.0, 0.11):
            d.ellipse(box(px - 0.1, top - 0.34, px + 0.1, top - 0.16), fill=(248, 248, 248))
    else:
        raise ValueError(f"unknown occupation {occupation!r}; expected one of {OCCUPATIONS}")
    if before_hat is not None:
        from PIL import Image

        img.paste(Image.blend(before_hat, img, float(hat_alpha)))
    return {"gender": gender, "occupation": occupation, "skin": skin, "hair_color": hair_name,
            "hat_alpha": round(float(hat_alpha), 4), "face_x": round(float(cx), 4), "face_y": round(float(cy), 4), "face_scale": round(float(sc), 4)}
