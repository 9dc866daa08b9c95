"""A drawing surface that remembers which body part owns each pixel.

Every shape is drawn twice: in colour on the RGB image, and as a part id on a label map. The label map is
what later stages need: shading and outlines follow part boundaries, patterns fill only the garment, and
tests check that the colour of the upper-garment pixels is the colour the prompt names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Frame:
    """Where the figure stands in the image: pixels per head unit (u), centre line x (cx), head-top y."""

    u: float
    cx: float
    top: float
    y_squash: float  # < 1 for a camera looking down: the body is foreshortened vertically


class Part(IntEnum):
    BACKGROUND = 0
    SKIN = 1
    HAIR = 2
    UPPER = 3  # the torso of the upper garment: where patterns and prints go
    SLEEVE = 4
    LOWER = 5
    SHOE = 6
    HEADWEAR = 7
    BAG = 8
    ACCESSORY = 9
    CARRIED = 10  # an object held in the hands (box, phone, umbrella)


class Canvas:
    def __init__(self, image: Image.Image):
        self.image = image
        self.labels = Image.new("L", image.size, int(Part.BACKGROUND))
        self._draw = ImageDraw.Draw(image)
        self._ldraw = ImageDraw.Draw(self.labels)

    def polygon(self, points: Sequence[Point], rgb: RGB, part: Part) -> None:
        if len(points) >= 3:
            self._draw.polygon(points, fill=rgb)
            self._ldraw.polygon(points, fill=int(part))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, rgb: RGB, part: Part) -> None:
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        if rx > 0.3 and ry > 0.3:
            self._draw.ellipse(box, fill=rgb)
            self._ldraw.ellipse(box, fill=int(part))

    def chord(
        self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, rgb: RGB, part: Part
    ) -> None:
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        if rx > 0.3 and ry > 0.3:
            self._draw.chord(box, start, end, fill=rgb)
            self._ldraw.chord(box, start, end, fill=int(part))

    def line(self, points: Sequence[Point], rgb: RGB, part: Part, width: float) -> None:
        w = max(1, int(round(width)))
        self._draw.line(points, fill=rgb, width=w, joint="curve")
        self._ldraw.line(points, fill=int(part), width=w, joint="curve")

    def rectangle(
        self, x0: float, y0: float, x1: float, y1: float, rgb: RGB, part: Part, radius: float = 0.0
    ) -> None:
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if radius >= 1:
            self._draw.rounded_rectangle(box, radius=radius, fill=rgb)
            self._ldraw.rounded_rectangle(box, radius=radius, fill=int(part))
        else:
            self._draw.rectangle(box, fill=rgb)
            self._ldraw.rectangle(box, fill=int(part))

    def limb(self, points: Sequence[Point], widths: Sequence[float], rgb: RGB, part: Part) -> None:
        """A tapered limb along a polyline: one quad per segment plus round joints (widths are full
        widths at each point)."""
        for (x0, y0), (x1, y1), w0, w1 in zip(points, points[1:], widths, widths[1:], strict=False):
            dx, dy = x1 - x0, y1 - y0
            norm = (dx * dx + dy * dy) ** 0.5 or 1.0
            nx, ny = -dy / norm, dx / norm
            quad = [
                (x0 + nx * w0 / 2, y0 + ny * w0 / 2),
                (x1 + nx * w1 / 2, y1 + ny * w1 / 2),
                (x1 - nx * w1 / 2, y1 - ny * w1 / 2),
                (x0 - nx * w0 / 2, y0 - ny * w0 / 2),
            ]
            self.polygon(quad, rgb, part)
        for (x, y), w in zip(points[1:-1], widths[1:-1], strict=False):
            self.ellipse(x, y, w / 2, w / 2, rgb, part)

    def fill_pattern(
        self, points: Sequence[Point], pattern: np.ndarray, origin: tuple[int, int], part: Part
    ) -> None:
        """Paint a pattern (an HxWx3 uint8 array whose top-left pixel lies at `origin`) inside a polygon."""
        h, w = pattern.shape[:2]
        if h == 0 or w == 0 or len(points) < 3:
            return
        ox, oy = origin
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).polygon([(x - ox, y - oy) for x, y in points], fill=255)
        self.image.paste(Image.fromarray(pattern, "RGB"), (ox, oy), mask)
        self.labels.paste(int(part), (ox, oy, ox + w, oy + h), mask)

    def label_array(self) -> np.ndarray:
        return np.asarray(self.labels)
