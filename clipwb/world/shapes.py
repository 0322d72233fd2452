"""The object classes of the embedded world: 16 icons drawn as masks from unit-square primitives.

Every shape is a list of primitives in coordinates where the icon fills [-1, 1]^2 (y points down).
A primitive is ``(kind, params, value)``: kind is ``"poly"`` (params = list of (x, y)) or ``"ellipse"``
(params = (cx, cy, rx, ry)); value 255 paints the shape, 0 cuts a hole (the ring's centre, the house's
door). Drawing them through a transform (scale, rotation, translation) into an "L" mask lets the caller
fill the mask with any colour over any background.
"""
from __future__ import annotations

import math

from PIL import ImageDraw

# Short names (<= 6 letters) keep written words large enough to be legible on 64 px images.
OBJECT_CLASSES: tuple[str, ...] = (
    "circle", "square", "star", "heart", "cross", "arrow", "moon", "ring",
    "house", "tree", "key", "bell", "fish", "cloud", "drop", "bolt",
)


def _circle(cx, cy, r, value=255):
    return ("ellipse", (cx, cy, r, r), value)


def _rect(x0, y0, x1, y1, value=255):
    return ("poly", [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], value)


def _star(n=5, r_out=1.0, r_in=0.45):
    pts = []
    for k in range(2 * n):
        r = r_out if k % 2 == 0 else r_in
        a = -math.pi / 2 + k * math.pi / n
        pts.append((r * math.cos(a), r * math.sin(a)))
    return ("poly", pts, 255)


def _heart():
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -y / 17.0 + 0.1))
    return ("poly", pts, 255)


SHAPES: dict[str, list] = {
    "circle": [_circle(0, 0, 0.95)],
    "square": [_rect(-0.8, -0.8, 0.8, 0.8)],
    "star": [_star()],
    "heart": [_heart()],
    "cross": [_rect(-0.28, -0.95, 0.28, 0.95), _rect(-0.95, -0.28, 0.95, 0.28)],
    "arrow": [_rect(-1.0, -0.22, 0.15, 0.22), ("poly", [(0.1, -0.7), (1.0, 0.0), (0.1, 0.7)], 255)],
    "moon": [_circle(0, 0, 0.95), _circle(0.45, -0.15, 0.8, 0)],
    "ring": [_circle(0, 0, 0.95), _circle(0, 0, 0.55, 0)],
    "house": [_rect(-0.7, -0.1, 0.7, 0.9), ("poly", [(-0.98, -0.05), (0, -0.95), (0.98, -0.05)], 255),
              _rect(-0.18, 0.4, 0.18, 0.9, 0)],
    "tree": [("poly", [(-0.8, 0.55), (0, -1.0), (0.8, 0.55)], 255), _rect(-0.16, 0.5, 0.16, 1.0)],
    "key": [_circle(-0.55, 0, 0.45), _circle(-0.55, 0, 0.2, 0), _rect(-0.15, -0.13, 1.0, 0.13),
            _rect(0.55, 0.1, 0.72, 0.42), _rect(0.83, 0.1, 1.0, 0.42)],
    "bell": [("poly", [(-0.25, -0.85), (0.25, -0.85), (0.5, -0.6), (0.58, 0.25), (0.92, 0.6), (-0.92, 0.6),
                       (-0.58, 0.25), (-0.5, -0.6)], 255), _circle(0, 0.78, 0.18), _circle(0, -0.9, 0.12)],
    "fish": [("ellipse", (-0.15, 0, 0.72, 0.42), 255), ("poly", [(0.4, 0.0), (1.0, -0.55), (1.0, 0.55)], 255),
             _circle(-0.5, -0.08, 0.09, 0)],
    "cloud": [_circle(-0.5, 0.15, 0.4), _circle(0.0, -0.15, 0.52), _circle(0.5, 0.15, 0.4),
              _rect(-0.5, 0.15, 0.5, 0.55)],
    "drop": [_circle(0, 0.35, 0.6), ("poly", [(-0.56, 0.15), (0, -1.0), (0.56, 0.15)], 255)],
    "bolt": [("poly", [(0.25, -1.0), (-0.5, 0.12), (-0.05, 0.12), (-0.28, 1.0), (0.52, -0.18), (0.06, -0.18)],
              255)],
}
assert set(SHAPES) == set(OBJECT_CLASSES)


def draw_shape_mask(mask, name: str, cx: float, cy: float, half: float, angle_deg: float) -> None:
    """Paint shape ``name`` into the "L" image ``mask``, centred at (cx, cy) px, half-extent ``half`` px,
    rotated by ``angle_deg`` degrees (counter-clockwise on screen)."""
    draw = ImageDraw.Draw(mask)
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)

    def tf(x, y):
        return (cx + half * (ca * x + sa * y), cy + half * (-sa * x + ca * y))

    for kind, params, value in SHAPES[name]:
        if kind == "poly":
            draw.polygon([tf(x, y) for x, y in params], fill=value)
        else:  # ellipse, approximated by a rotated polygon so that rotation applies to ellipses too
            ex, ey, rx, ry = params
            pts = [tf(ex + rx * math.cos(2 * math.pi * k / 40), ey + ry * math.sin(2 * math.pi * k / 40))
                   for k in range(40)]
            draw.polygon(pts, fill=value)
