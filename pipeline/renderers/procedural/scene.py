"""Scene backgrounds of the procedural renderer: one wide backdrop per virtual camera.

Each camera of the taxonomy names a scene ("subway station platform", "park walkway with trees", ...) and a
mounting angle. A camera's backdrop is drawn once (cached) from a recipe picked by keywords in the scene
name, with the horizon placed by the angle (a steep downward camera sees only floor). Every view of that
camera crops a window from the backdrop at a view-seeded offset, so backgrounds are consistent per camera
(a real Re-ID cue and a real domain factor) without being identical from shot to shot. A scene name no
recipe knows gets a generic wall-and-floor scene in colours hashed from its name.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from dppp.pipeline.renderers.procedural.colours import hash_colour, stable_unit
from dppp.pipeline.renderers.procedural.traits import philox

HORIZON = {"steep downward": 0.1, "downward": 0.24, "slight downward": 0.36, "eye level": 0.47}
WIDE = 2  # the backdrop is this many frame widths wide


def horizon_fraction(angle: str) -> float:
    return HORIZON.get(angle, 0.3)


@lru_cache(maxsize=64)
def backdrop(scene: str, angle: str, height: int, width: int) -> np.ndarray:
    """The camera's wide backdrop, an (height, WIDE * width, 3) uint8 array (read-only: it is shared)."""
    w = width * WIDE
    rng = philox(int(stable_unit("scene:" + scene) * 2**63), 0x5C)
    horizon = int(round(horizon_fraction(angle) * height))
    image = Image.new("RGB", (w, height))
    draw = ImageDraw.Draw(image)
    recipe = _recipe(scene)
    recipe(draw, rng, w, height, horizon, scene)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    # Low-frequency blotches and fine grain so flat areas read as surfaces, not paint.
    coarse = rng.random((max(2, height // 24), max(2, w // 16)), dtype=np.float32)
    blotch = (
        np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, height), Image.BILINEAR),
            dtype=np.float32,
        )
        / 255.0
    )
    grain = rng.random((height, w), dtype=np.float32)
    arr = arr * (0.9 + 0.16 * blotch[..., None]) + (grain[..., None] - 0.5) * 0.04
    # Distance haze toward the horizon: far things are paler, which also separates the figure.
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    haze = np.clip(1.0 - np.abs(rows - horizon) / (0.35 * height), 0.0, 1.0) * 0.18
    arr = arr * (1 - haze) + 0.75 * haze
    out = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out.setflags(write=False)
    return out


def crop(scene: str, angle: str, height: int, width: int, offset: float) -> Image.Image:
    """A frame-sized window of the camera's backdrop; offset in [0, 1] picks where."""
    wide = backdrop(scene, angle, height, width)
    x0 = int(round(offset * (wide.shape[1] - width)))
    return Image.fromarray(wide[:, x0 : x0 + width], "RGB")


# -- recipes -----------------------------------------------------------------------------------------------
def _floor_tiles(draw, w, h, horizon, colour, line, rows=7, columns=9):
    draw.rectangle((0, horizon, w, h), fill=colour)
    depth = h - horizon
    for k in range(1, rows + 1):  # rows get further apart toward the camera: perspective
        y = horizon + depth * (k / rows) ** 1.8
        draw.line((0, y, w, y), fill=line, width=1)
    vx = w / 2
    for k in range(-columns, columns + 1):
        draw.line((vx + k * w / (columns * 1.2), horizon, vx + k * w / 2.2, h), fill=line, width=1)


def _windows(draw, rng, w, top, bottom, wall, glass, cols=10, rows=3):
    draw.rectangle((0, top, w, bottom), fill=wall)
    if bottom - top < 8:
        return
    cw, rh = w / cols, (bottom - top) / rows
    for i in range(cols):
        for j in range(rows):
            shade = tuple(int(c * (0.85 + 0.3 * rng.random())) for c in glass)
            draw.rectangle(
                (i * cw + cw * 0.18, top + j * rh + rh * 0.2, i * cw + cw * 0.82, top + j * rh + rh * 0.8),
                fill=shade,
            )


def _trees(draw, rng, w, horizon, count, greens):
    for _ in range(count):
        x, r = rng.random() * w, 8 + rng.random() * 22
        y = horizon - r * (0.6 + 0.8 * rng.random())
        draw.rectangle((x - 2, y, x + 2, horizon), fill=(80, 60, 40))
        g = greens[int(rng.random() * len(greens))]
        draw.ellipse((x - r, y - r, x + r, y + r), fill=g)


def _cars(draw, rng, w, base, size):
    colours = [(180, 30, 35), (30, 40, 90), (200, 200, 205), (25, 25, 28), (120, 120, 125), (60, 90, 130)]
    x = -rng.random() * size
    while x < w:
        c = colours[int(rng.random() * len(colours))]
        draw.rounded_rectangle((x, base - size * 0.55, x + size * 1.7, base), radius=4, fill=c)
        draw.rectangle((x + size * 0.3, base - size * 0.85, x + size * 1.3, base - size * 0.5), fill=c)
        draw.rectangle(
            (x + size * 0.4, base - size * 0.8, x + size * 1.2, base - size * 0.55), fill=(150, 175, 190)
        )
        for wx in (x + size * 0.35, x + size * 1.35):
            draw.ellipse(
                (wx - size * 0.18, base - size * 0.2, wx + size * 0.18, base + size * 0.1), fill=(20, 20, 20)
            )
        x += size * (2.0 + rng.random())


def _sidewalk(draw, rng, w, h, horizon, scene):
    _windows(draw, rng, w, 0, max(horizon, 1), (176, 120, 96), (70, 85, 105))
    _floor_tiles(draw, w, h, horizon, (172, 170, 166), (140, 138, 134))
    draw.rectangle((0, h - h * 0.04, w, h), fill=(120, 120, 118))  # the kerb


def _campus(draw, rng, w, h, horizon, scene):
    _windows(draw, rng, w, 0, max(horizon, 1), (200, 190, 170), (90, 105, 120), cols=8, rows=2)
    _trees(draw, rng, w, max(horizon, 1), 6, [(60, 110, 55), (45, 95, 50)])
    draw.rectangle((0, horizon, w, h), fill=(92, 140, 70))
    draw.polygon(
        [(w * 0.38, horizon), (w * 0.62, horizon), (w * 0.95, h), (w * 0.05, h)], fill=(190, 175, 150)
    )


def _mall(draw, rng, w, h, horizon, scene):
    top = max(horizon, 1)
    shop = [(200, 60, 60), (60, 120, 190), (230, 180, 60), (90, 160, 110), (170, 90, 160)]
    draw.rectangle((0, 0, w, top), fill=(225, 222, 215))
    x = 0.0
    while x < w:
        sw = 30 + rng.random() * 30
        draw.rectangle((x, top * 0.15, x + sw - 3, top), fill=(190, 215, 228))
        draw.rectangle((x, top * 0.05, x + sw - 3, top * 0.2), fill=shop[int(rng.random() * len(shop))])
        x += sw
    draw.rectangle((0, horizon, w, h), fill=(214, 204, 186))
    for k in range(0, w, 24):  # ceiling light reflections on the polished floor
        draw.rectangle((k + 8, horizon + (h - horizon) * 0.2, k + 12, h), fill=(236, 230, 218))


def _subway(draw, rng, w, h, horizon, scene):
    top = max(horizon, 1)
    draw.rectangle((0, 0, w, top), fill=(218, 214, 196))
    for x in range(0, w, 6):
        draw.line((x, 0, x, top), fill=(200, 196, 180))
    draw.rectangle((0, top * 0.55, w, top * 0.7), fill=(40, 90, 150))
    draw.rectangle((0, horizon, w, h), fill=(128, 128, 126))
    y = horizon + (h - horizon) * 0.12
    draw.rectangle((0, y, w, y + 4), fill=(225, 195, 40))  # the platform-edge safety line


def _park(draw, rng, w, h, horizon, scene):
    draw.rectangle((0, 0, w, h), fill=(150, 190, 220))
    _trees(draw, rng, w, max(horizon, 6), 14, [(40, 100, 45), (60, 120, 50), (30, 80, 40)])
    draw.rectangle((0, horizon, w, h), fill=(70, 130, 60))
    draw.polygon([(w * 0.42, horizon), (w * 0.58, horizon), (w * 0.8, h), (w * 0.2, h)], fill=(150, 140, 125))


def _parking(draw, rng, w, h, horizon, scene):
    draw.rectangle((0, 0, w, h), fill=(78, 78, 82))
    if horizon > 10:
        draw.rectangle((0, 0, w, horizon), fill=(170, 175, 180))
        _cars(draw, rng, w, horizon + 4, max(10.0, horizon * 0.7))
    for k in range(-4, 12):
        x = k * w / 7
        draw.line((x, horizon, x - w * 0.12, h), fill=(225, 225, 220), width=2)


def _lobby(draw, rng, w, h, horizon, scene):
    draw.rectangle((0, 0, w, max(horizon, 1)), fill=(150, 112, 78))
    for x in range(0, w, 22):
        draw.line((x, 0, x, horizon), fill=(125, 92, 64), width=2)
    _floor_tiles(draw, w, h, horizon, (222, 218, 210), (190, 186, 180), rows=5, columns=5)


def _crosswalk(draw, rng, w, h, horizon, scene):
    _windows(draw, rng, w, 0, max(horizon, 1), (150, 150, 160), (60, 70, 90), cols=12, rows=3)
    draw.rectangle((0, horizon, w, h), fill=(70, 70, 74))
    stripe = w / 14
    for k in range(0, 14, 2):
        draw.rectangle((k * stripe, horizon + (h - horizon) * 0.1, (k + 1) * stripe, h), fill=(215, 215, 210))


def _station(draw, rng, w, h, horizon, scene):
    draw.rectangle((0, 0, w, max(horizon, 1)), fill=(205, 210, 212))
    for x in range(10, w, 40):
        draw.rectangle((x, 0, x + 9, horizon), fill=(150, 150, 155))  # columns
    _floor_tiles(draw, w, h, horizon, (190, 184, 172), (160, 154, 144), rows=6, columns=7)


def _residential(draw, rng, w, h, horizon, scene):
    top = max(horizon, 1)
    draw.rectangle((0, 0, w, top), fill=(165, 200, 225))
    houses = [(205, 180, 150), (170, 90, 70), (230, 225, 210), (140, 160, 150)]
    x = 0.0
    while x < w:
        hw = 40 + rng.random() * 25
        draw.rectangle((x, top * 0.3, x + hw - 4, top), fill=houses[int(rng.random() * len(houses))])
        draw.polygon(
            [(x - 2, top * 0.3), (x + hw / 2, top * 0.05), (x + hw - 2, top * 0.3)], fill=(90, 60, 55)
        )
        x += hw
    draw.rectangle((0, horizon, w, h), fill=(95, 95, 98))
    _cars(draw, rng, w, horizon + (h - horizon) * 0.25, max(10.0, (h - horizon) * 0.25))
    draw.rectangle((0, horizon + (h - horizon) * 0.3, w, h), fill=(160, 158, 152))


def _generic(draw, rng, w, h, horizon, scene):
    wall, floor = hash_colour("wall:" + scene), hash_colour("floor:" + scene)
    draw.rectangle((0, 0, w, max(horizon, 1)), fill=wall)
    _floor_tiles(draw, w, h, horizon, floor, tuple(int(c * 0.8) for c in floor))


RECIPES = (  # the first keyword found in the scene name picks the recipe ("parked cars" is not a park)
    ("crosswalk", _crosswalk),
    ("residential", _residential),
    ("parking", _parking),
    ("sidewalk", _sidewalk),
    ("campus", _campus),
    ("mall", _mall),
    ("subway", _subway),
    ("platform", _subway),
    ("park", _park),
    ("lobby", _lobby),
    ("office", _lobby),
    ("station", _station),
    ("street", _sidewalk),
)


def _recipe(scene: str):
    name = scene.lower()
    for keyword, recipe in RECIPES:
        if keyword in name:
            return recipe
    return _generic
