"""The procedural figure's head: face (eyes, glasses, mask, mouth), hair on and below the head, headwear.

A mixin of `Figure` (procedural_figure.py): it draws with the figure's projection (`point`, `x`, `y`,
`half_width`, `toward_camera`), frame, attributes, traits and colours.
"""

from __future__ import annotations

import math

import numpy as np

from dppp.pipeline.renderers.procedural.canvas import Canvas, Part
from dppp.pipeline.renderers.procedural.colours import DARK


class HeadDrawing:
    def _head(self, canvas: Canvas) -> None:
        u = self.frame.u
        hs = self.traits.head_scale
        cx, cy = self.point(0, 0, 0.5)
        rx, ry = self.half_width(0.37 * hs, 0.45 * hs), 0.5 * hs * u * self.frame.y_squash
        headwear = self.attrs.get("headwear", "none")
        hair_len = self.attrs.get("hair_length", "short")
        c = self.colour
        canvas.ellipse(cx, cy, rx, ry, c.skin, Part.SKIN)
        face_visible = self.cos > -0.3
        if headwear in ("hood up", "headscarf"):
            drape = 1.25 if headwear == "headscarf" else 1.0
            canvas.ellipse(cx, cy + 0.12 * u, rx * 1.35, ry * 1.3 * drape, c.headwear, Part.HEADWEAR)
        elif hair_len != "bald":
            vol = (
                1.04
                + 0.1 * self.traits.hair_volume
                + (0.15 if self.attrs.get("hair_style") == "curly" else 0.0)
            )
            canvas.ellipse(cx, cy - 0.04 * u, rx * vol, ry * (vol * 0.98), c.hair, Part.HAIR)
            if self.attrs.get("hair_style") == "curly":
                for ang in range(200, 345, 36):
                    ex = cx + math.cos(math.radians(ang)) * rx * vol
                    ey = cy - 0.04 * u + math.sin(math.radians(ang)) * ry * vol
                    canvas.ellipse(ex, ey, rx * 0.3, rx * 0.3, c.hair, Part.HAIR)
        if face_visible:
            vis = 0.55 + 0.45 * max(self.cos, 0.0)
            fx = self.x(0, 0.22 * hs) if abs(self.sin) > 0.3 else cx
            hood = headwear in ("hood up", "headscarf")
            hairline = (
                0.0 if hair_len in ("bald",) else 0.06 + 0.1 * self.traits.fringe * (hair_len != "very short")
            )
            fry = ry * (0.8 - hairline) * (0.9 if hood else 1.0)
            fcy = cy + ry - fry
            frx = rx * vis * (0.8 if hood else 0.92)
            if self.cos < 0.25:  # a side view: the cheek and nose, not a full face
                fx = cx + (fx - cx) * 1.35
                frx = rx * 0.55
            canvas.ellipse(fx, fcy, frx, fry, c.skin, Part.SKIN)
            if abs(self.sin) > 0.5:  # the nose profile
                canvas.ellipse(self.x(0, 0.5 * hs), self.y(0.58), 0.06 * u, 0.07 * u, c.skin, Part.SKIN)
            self._face(canvas, hs)
        self._hair_extras(canvas, cx, cy, rx, ry)
        self._headwear(canvas, headwear, cx, cy, rx, ry)

    def _face(self, canvas: Canvas, hs: float) -> None:
        u = self.frame.u
        acc = self.attrs.get("accessory", "none")
        eyes = [
            (lat, 0.42 * hs) for lat in (-0.15 * hs, 0.15 * hs) if self.toward_camera(lat, 0.42 * hs) > 0.12
        ]
        for lat, dep in eyes:
            ex, ey = self.point(lat, dep, 0.52)
            if acc == "sunglasses":
                canvas.ellipse(ex, ey, 0.09 * u, 0.065 * u, (15, 15, 18), Part.ACCESSORY)
            else:
                canvas.ellipse(ex, ey, max(0.6, 0.035 * u), max(0.6, 0.035 * u), (35, 28, 25), Part.SKIN)
                if acc == "glasses":
                    canvas.line(
                        [
                            (ex - 0.08 * u, ey - 0.05 * u),
                            (ex + 0.08 * u, ey - 0.05 * u),
                            (ex + 0.08 * u, ey + 0.05 * u),
                            (ex - 0.08 * u, ey + 0.05 * u),
                            (ex - 0.08 * u, ey - 0.05 * u),
                        ],
                        (30, 30, 34),
                        Part.ACCESSORY,
                        max(1, 0.025 * u),
                    )
        if acc == "face mask" and self.cos > -0.2:
            mx, my = self.point(0, 0.35 * hs, 0.78)
            canvas.rectangle(
                mx - self.half_width(0.26, 0.25),
                my - 0.13 * u,
                mx + self.half_width(0.26, 0.25),
                my + 0.13 * u,
                self.colour.mask,
                Part.ACCESSORY,
                radius=2,
            )
        elif self.cos > 0.5:
            mx, my = self.point(0, 0.45 * hs, 0.8)
            canvas.line(
                [(mx - 0.07 * u, my), (mx + 0.07 * u, my)], (150, 80, 75), Part.SKIN, max(1, 0.03 * u)
            )

    def _hair_below_head(self, canvas: Canvas) -> None:
        """Hair below the head: long or medium-length hair, ponytail, braid. `draw` puts it behind the body
        in front views, over the back in back views."""
        length = self.attrs.get("hair_length", "short")
        style = self.attrs.get("hair_style", "straight")
        if self.attrs.get("headwear") in ("hood up", "headscarf") or length in ("bald", "very short"):
            return
        u = self.frame.u
        c = self.colour
        hs = self.traits.head_scale
        if style in ("ponytail", "braided"):
            if self.cos > 0.5:
                return
            end = 1.7 if style == "ponytail" else 2.5
            pts = [
                self.point(0, -0.45 * hs, 0.45),
                self.point(0, -0.55 * hs, 1.0),
                self.point(0, -0.5 * hs, end),
            ]
            canvas.limb(pts, [0.28 * u, 0.24 * u, 0.1 * u], c.hair, Part.HAIR)
            if style == "braided":
                for y in np.arange(1.0, end, 0.3):
                    bx, by = self.point(0, -0.52 * hs, float(y))
                    canvas.line(
                        [(bx - 0.08 * u, by), (bx + 0.08 * u, by + 0.1 * u)], c.hair_dark, Part.HAIR, 1
                    )
            return
        if length not in ("medium-length", "long"):
            return
        end = 1.35 if length == "medium-length" else 2.2 + 0.3 * self.traits.hair_volume
        vol = 1.0 + 0.15 * self.traits.hair_volume + (0.2 if style in ("curly", "wavy") else 0.0)
        # Hair falls behind the shoulders: from the side it is a narrow curtain behind the head.
        top = self.half_width(0.42 * vol * hs, 0.3 * hs)
        low = self.half_width(0.5 * vol * hs, 0.2 * hs)
        cx, _ = self.point(0, -0.3 * hs, 0)
        y0, y1 = self.y(0.45), self.y(end)
        pts = [(cx - top, y0), (cx + top, y0), (cx + low, y1), (cx - low, y1)]
        if style == "wavy" or style == "curly":
            pts = [
                (cx - top, y0),
                (cx + top, y0),
                (cx + low * 1.1, (y0 + y1) / 2),
                (cx + low, y1),
                (cx, y1 + 0.15 * u),
                (cx - low, y1),
                (cx - low * 1.1, (y0 + y1) / 2),
            ]
        canvas.polygon(pts, c.hair, Part.HAIR)

    def _hair_extras(self, canvas: Canvas, cx: float, cy: float, rx: float, ry: float) -> None:
        """A bun sits on the back of the head: a bump above the head from the front, a ball from behind."""
        if self.attrs.get("hair_style") == "bun" and self.attrs.get("headwear") in (None, "none"):
            bx, by = self.point(0, -0.35 * self.traits.head_scale, 0.1)
            canvas.ellipse(bx, by, 0.2 * self.frame.u, 0.2 * self.frame.u, self.colour.hair, Part.HAIR)

    def _headwear(self, canvas: Canvas, kind: str, cx: float, cy: float, rx: float, ry: float) -> None:
        if kind in ("none", "hood up", "headscarf"):
            return
        u = self.frame.u
        rgb = self.colour.headwear
        if kind == "baseball cap":
            canvas.chord(cx, cy, rx * 1.07, ry * 1.05, 180, 360, rgb, Part.HEADWEAR)
            bx = self.x(0, 0.5)
            brim = self.half_width(0.4, 0.3) if abs(self.sin) < 0.5 else 0.28 * u
            if self.cos > -0.5:
                canvas.ellipse(
                    bx + (bx - cx) * 0.4,
                    cy - 0.02 * u,
                    brim,
                    0.06 * u,
                    self.colour.headwear_dark,
                    Part.HEADWEAR,
                )
        elif kind == "beanie":
            canvas.chord(cx, cy + 0.05 * u, rx * 1.1, ry * 1.12, 180, 360, rgb, Part.HEADWEAR)
            canvas.rectangle(
                cx - rx * 1.1,
                cy - 0.05 * u,
                cx + rx * 1.1,
                cy + 0.08 * u,
                self.colour.headwear_dark,
                Part.HEADWEAR,
            )
        elif kind in ("sun hat", "bucket hat"):
            wide = 1.9 if kind == "sun hat" else 1.4
            canvas.ellipse(cx, cy - 0.12 * u, rx * wide, 0.1 * u, self.colour.headwear_dark, Part.HEADWEAR)
            canvas.chord(cx, cy - 0.1 * u, rx * 1.02, ry * 0.95, 180, 360, rgb, Part.HEADWEAR)
        elif kind == "helmet":
            canvas.chord(cx, cy + 0.02 * u, rx * 1.18, ry * 1.12, 180, 360, rgb, Part.HEADWEAR)
            canvas.ellipse(
                cx - rx * 0.35, cy - ry * 0.6, rx * 0.25, ry * 0.12, (240, 240, 240), Part.HEADWEAR
            )
        else:  # an unknown headwear value: a generic cap in its colour
            canvas.chord(cx, cy, rx * 1.08, ry * 1.05, 180, 360, rgb, Part.HEADWEAR)
        if self.attrs.get("accessory") == "headphones":
            canvas.line([(cx - rx, cy), (cx, cy - ry * 1.15), (cx + rx, cy)], DARK, Part.ACCESSORY, 0.06 * u)
