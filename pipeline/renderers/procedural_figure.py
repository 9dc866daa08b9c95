"""The pedestrian of the procedural renderer: a body in head units, turned to the viewpoint, dressed.

Geometry lives in a body frame measured in head heights ("hu"): L runs to the person's right, D forward
(where they face), y down from the top of the head. The viewpoint is a yaw angle; a body point projects to
image x = cx - (L cos yaw + D sin yaw) * u, and lies toward the camera by z = D cos yaw - L sin yaw. So one
description of a backpack (behind the back, D < 0) is hidden behind the torso in a front view, covers the
back in a back view and sticks out behind in a side view, with no per-view special cases. Parts are drawn
back to front by that depth.

Attributes select shapes (`gender`, `build` and `height` shape the silhouette; garment types pick
outlines; patterns fill the garment); `IdentityTraits` add the continuous per-person detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.renderers.procedural_canvas import Canvas, Part
from pipeline.renderers.procedural_colours import Colours, jitter, to255
from pipeline.renderers.procedural_traits import IdentityTraits, ViewTraits

YAW = {  # degrees; left-family views show the person's left side, so they face the image left
    "front": 0.0, "front-left three-quarter": 45.0, "left side": 90.0, "back-left three-quarter": 135.0,
    "back": 180.0, "back-right three-quarter": 225.0, "right side": 270.0,
    "front-right three-quarter": 315.0,
}
BUILD = {  # shoulder, waist, hip, limb thickness multipliers
    "slim": (0.92, 0.86, 0.92, 0.85), "average": (1.0, 1.0, 1.0, 1.0),
    "athletic": (1.1, 0.94, 0.98, 1.08), "heavy": (1.12, 1.38, 1.25, 1.25),
}
# Upper garments: hem (hu from the head top), sleeve end (None: long to the wrist, 0: sleeveless, else y).
UPPER = {
    "t-shirt": (3.95, 2.35), "shirt": (4.0, None), "polo shirt": (3.95, 2.3), "sweater": (3.95, None),
    "hoodie": (4.05, None), "jacket": (4.1, None), "coat": (5.55, None), "blouse": (3.9, None),
    "tank top": (3.9, 0.0), "dress": (5.45, 2.25), "suit jacket": (4.2, None), "vest": (3.85, 0.0),
}
# Lower garments: hem y in hu (None: to the ankle), flare (skirts), leg width multiplier.
LOWER = {
    "jeans": (None, 0.0, 1.0), "trousers": (None, 0.0, 1.05), "shorts": (4.85, 0.0, 1.15),
    "sweatpants": (None, 0.0, 1.18), "skirt": (5.35, 0.35, 1.0), "long skirt": (6.85, 0.5, 1.0),
    "leggings": (None, 0.0, 0.86), "cargo pants": (None, 0.0, 1.15),
}
STRIDE = {  # leg stride, arm pose
    "walking": (0.55, "swing"), "standing": (0.0, "hang"), "standing still looking at a phone": (0.0, "phone"),
    "jogging": (0.85, "jog"), "carrying something": (0.35, "carry"), "waiting": (0.05, "hang"),
    "mid-stride crossing": (0.8, "swing"),
}
SHOE_COLOURED_SOLE = {"sneakers", "running shoes"}
DARK = (22, 22, 24)


def heads_tall(attrs: dict[str, str], traits: IdentityTraits) -> float:
    """The body's height in head units (teenagers have relatively bigger heads)."""
    return traits.heads_tall - (0.3 if attrs.get("age_group") == "teenage" else 0.0)


@dataclass(frozen=True)
class Frame:
    """Where the figure stands in the image: pixels per head unit (u), centre line x (cx), head-top y."""

    u: float
    cx: float
    top: float
    y_squash: float  # < 1 for a camera looking down: the body is foreshortened vertically


class Figure:
    def __init__(self, attrs: dict[str, str], colours: Colours, traits: IdentityTraits,
                 view: ViewTraits, frame: Frame, second_colour_names: list[str]):
        self.attrs = attrs
        self.traits = traits
        self.frame = frame
        yaw = math.radians(YAW.get(attrs.get("viewpoint", "front"), 0.0))
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        woman = attrs.get("gender") == "woman"
        sb, wb, hb, lb = BUILD.get(attrs.get("build", "average"), BUILD["average"])
        self.shoulder = (0.86 if woman else 1.0) * sb * traits.shoulder_scale
        self.waist = (0.6 if woman else 0.7) * wb * traits.hip_scale
        self.hip = (0.8 if woman else 0.74) * hb * traits.hip_scale
        self.limb = lb * traits.limb_scale
        self.total = heads_tall(attrs, traits)
        self.knee = 5.55 + traits.leg_scale * 0.5 + (self.total - 7.4) * 0.5
        self.crotch = 4.0 + (self.total - 7.4) * 0.3
        self.colour = _Palette(attrs, colours, traits, second_colour_names)
        stride, self.arm_pose = STRIDE.get(attrs.get("pose", "walking"), (0.4, "swing"))
        self.stride = stride * traits.stride_scale * (0.4 + 0.6 * abs(view.gait_phase))
        self.step = 1 if view.gait_phase >= 0 else -1  # +1: the right leg is forward
        upper = attrs.get("upper_type", "")
        self.hem, self.sleeve = UPPER.get(upper, (4.0, None))
        lower = attrs.get("lower_type", "")
        self.lower_hem, self.flare, self.leg_fill = LOWER.get(lower, (None, 0.0, 1.05))
        if upper == "dress" and lower not in ("skirt", "long skirt"):
            self.lower_hem = None

    # -- projection ------------------------------------------------------------------------------------
    def x(self, lat: float, depth: float = 0.0) -> float:
        return self.frame.cx - (lat * self.cos + depth * self.sin) * self.frame.u

    def y(self, y: float) -> float:
        return self.frame.top + y * self.frame.u * self.frame.y_squash

    def point(self, lat: float, depth: float, y: float) -> tuple[float, float]:
        return (self.x(lat, depth), self.y(y))

    def toward_camera(self, lat: float, depth: float) -> float:
        """How far a body point lies toward the camera: parts are drawn back to front by it."""
        return depth * self.cos - lat * self.sin

    def half_width(self, lat: float, depth: float) -> float:
        """Projected half-width (pixels) of a cross-section with half-extents lat x depth."""
        return math.hypot(lat * self.cos, depth * self.sin) * self.frame.u

    # -- drawing order -------------------------------------------------------------------------------------
    def draw(self, canvas: Canvas) -> None:
        arms = sorted((self.toward_camera(side * self.shoulder, 0.0), side) for side in (1, -1))
        legs = sorted((self.toward_camera(side * self.hip * 0.5, self._foot_depth(side)), side) for side in (1, -1))
        bag = self.attrs.get("bag", "none")
        bag_z = self._bag_depth(bag)
        behind = bag_z < -0.15
        if behind and bag != "none":
            self._bag(canvas, bag)
        hair_over_back = self.cos < 0.2  # seen from behind, hair below the head covers the back
        if not hair_over_back:
            self._hair_below_head(canvas)  # from the front it hangs behind the body
        # In side views the far arm hangs behind the body; otherwise arms are drawn over the torso.
        far_side = arms[0][1] if arms[0][0] < -0.3 else None
        if far_side is not None:
            self._arm(canvas, far_side)
        for _, side in legs:
            self._leg(canvas, side)
        self._lower_body(canvas)
        self._torso(canvas)
        if not behind and bag != "none":
            self._bag(canvas, bag)
        if bag == "backpack" and self.cos > 0.2:
            self._backpack_straps(canvas)
        if hair_over_back:
            self._hair_below_head(canvas)
        self._head(canvas)
        for _, side in arms:
            if side != far_side:
                self._arm(canvas, side)
        self._held(canvas)

    # -- body parts ---------------------------------------------------------------------------------------
    def _foot_depth(self, side: int) -> float:
        return side * self.step * self.stride * 0.75

    def _leg(self, canvas: Canvas, side: int) -> None:
        lat = side * self.hip * 0.5
        foot_d = self._foot_depth(side)
        lift = 0.25 * self.stride if foot_d < 0 else 0.0  # the trailing foot pushes off the ground
        ankle_y = self.total - 0.28 - lift
        knee_d = foot_d * 0.45 + 0.1 * self.stride
        hip_pt = self.point(lat * 0.9, 0.0, self.crotch - 0.35)
        knee_pt = self.point(lat * 0.85, knee_d, self.knee)
        ankle_pt = self.point(lat * 0.8, foot_d, ankle_y)
        w = self.frame.u * self.limb
        widths = [0.62 * w * self.hip / 0.77, 0.4 * w, 0.28 * w]
        pts = [hip_pt, knee_pt, ankle_pt]
        canvas.limb(pts, widths, self.colour.skin, Part.SKIN)
        hem = self.lower_hem
        if hem is None or self.flare == 0.0:
            end_y = ankle_y + 0.12 if hem is None else hem
            cover, cover_w = _cut_polyline(pts, widths, self.y(end_y))
            cover_w = [wd * self.leg_fill + 1.0 for wd in cover_w]
            canvas.limb(cover, cover_w, self.colour.lower, Part.LOWER)
            if self.attrs.get("lower_type") == "cargo pants" and len(cover) >= 2:
                px, py = cover[0][0] * 0.4 + cover[1][0] * 0.6, cover[0][1] * 0.4 + cover[1][1] * 0.6
                canvas.rectangle(px - 0.12 * w, py, px + 0.12 * w, py + 0.3 * w, self.colour.lower_dark,
                                 Part.LOWER)
        self._shoe(canvas, lat * 0.8, foot_d, ankle_y)

    def _shoe(self, canvas: Canvas, lat: float, depth: float, ankle_y: float) -> None:
        kind = self.attrs.get("footwear", "sneakers")
        half_w = self.half_width(0.15 * self.limb, 0.32)
        cx = self.x(lat, depth + 0.12)
        top = self.y(ankle_y - (0.45 if kind == "boots" else 0.05))
        bottom = self.y(ankle_y + 0.3)
        rgb = self.colour.shoe
        if kind == "sandals":
            canvas.rectangle(cx - half_w, top, cx + half_w, bottom, self.colour.skin, Part.SKIN, radius=2)
            canvas.rectangle(cx - half_w, top + (bottom - top) * 0.4, cx + half_w, top + (bottom - top) * 0.6,
                             rgb, Part.SHOE)
            canvas.rectangle(cx - half_w, bottom - 1.5, cx + half_w, bottom, rgb, Part.SHOE)
            return
        if kind == "high heels":
            bottom = self.y(ankle_y + 0.32)
            top = self.y(ankle_y + 0.02)
        canvas.rectangle(cx - half_w, top, cx + half_w, bottom, rgb, Part.SHOE, radius=max(1.0, half_w * 0.5))
        if kind in SHOE_COLOURED_SOLE:
            sole = (238, 238, 236) if self.attrs.get("footwear_color") != "white" else (120, 120, 124)
            canvas.rectangle(cx - half_w, bottom - max(1.5, 0.07 * self.frame.u), cx + half_w, bottom, sole,
                             Part.SHOE)

    def _lower_body(self, canvas: Canvas) -> None:
        """Pelvis of trousers, or the whole skirt."""
        top = 2.95
        hip = self.hip * (1.0 + 0.1 * (self.leg_fill - 1.0))
        if self.flare > 0.0:
            hem = self.lower_hem or 5.35
            pts = self._section([(top, self.waist * 1.02, 0.4), (3.7, hip * 1.05, 0.45),
                                 (hem, hip * (1.0 + self.flare), 0.6)])
        else:
            pts = self._section([(top, self.waist * 1.02, 0.4), (3.7, hip, 0.45), (self.crotch, hip * 0.95, 0.45)])
        canvas.polygon(pts, self.colour.lower, Part.LOWER)

    def _section(self, rows: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
        """A closed outline through (y, lateral half-width, depth half-width) rows, both sides."""
        right = [(self.frame.cx + self.half_width(lat, dep), self.y(y)) for y, lat, dep in rows]
        left = [(self.frame.cx - self.half_width(lat, dep), self.y(y)) for y, lat, dep in rows]
        return right + left[::-1]

    def _torso(self, canvas: Canvas) -> None:
        kind = self.attrs.get("upper_type", "")
        neck = self.point(0, 0.05, 1.0)
        nw = self.half_width(0.17, 0.18)
        canvas.rectangle(neck[0] - nw, neck[1] - 0.1 * self.frame.u, neck[0] + nw, self.y(1.45), self.colour.skin,
                         Part.SKIN)
        s, w, h = self.shoulder, self.waist, self.hip
        hem = self.hem
        hem_w = h * (1.2 if kind == "coat" else 1.35 if kind == "dress" else 1.04)
        rows = [(1.18, s * 0.45, 0.3), (1.33, s * 0.85, 0.34), (1.55, s, 0.36), (2.1, s * 0.93, 0.38),
                (3.0, max(w, s * 0.72), 0.36), (min(hem, 3.7), max(h, w) * 1.04, 0.38), (hem, hem_w, 0.42)]
        pts = self._section(rows)
        canvas.polygon(pts, self.colour.upper, Part.UPPER)
        self._pattern(canvas, pts)
        front = self.cos > 0.25
        if front:
            self._garment_front(canvas, kind)
        elif kind == "hoodie" and self.attrs.get("headwear") != "hood up":
            # the lowered hood lies on the upper back
            hx, hy = self.point(0, -0.2, 1.55)
            canvas.ellipse(hx, hy, self.half_width(0.45, 0.2), 0.35 * self.frame.u, self.colour.upper_dark, Part.UPPER)
        if self.attrs.get("accessory") == "scarf":
            sx, sy = self.point(0, 0.05, 1.25)
            canvas.rectangle(sx - self.half_width(0.36, 0.3), sy - 0.12 * self.frame.u,
                             sx + self.half_width(0.36, 0.3), sy + 0.2 * self.frame.u, self.colour.accessory,
                             Part.ACCESSORY, radius=2)

    def _garment_front(self, canvas: Canvas, kind: str) -> None:
        u = self.frame.u
        c = self.colour
        if kind in ("shirt", "polo shirt", "blouse"):  # collar
            for side in (1, -1):
                a, b = self.point(side * 0.02, 0.3, 1.15), self.point(side * 0.22, 0.3, 1.22)
                canvas.polygon([a, b, self.point(side * 0.05, 0.3, 1.45)], c.upper_light, Part.UPPER)
        elif kind in ("jacket", "coat", "hoodie"):  # zip / button line
            top, bottom = self.point(0, 0.36, 1.2), self.point(0, 0.4, self.hem)
            canvas.line([top, bottom], c.upper_dark, Part.UPPER, max(1.0, 0.05 * u))
            if kind == "hoodie":
                px, py = self.point(0, 0.4, 3.35)
                canvas.rectangle(px - self.half_width(0.42, 0.2), py, px + self.half_width(0.42, 0.2),
                                 py + 0.4 * u, c.upper_dark, Part.UPPER, radius=2)
        elif kind in ("suit jacket", "vest"):  # lapels over a light shirt
            shirt = (228, 228, 224)
            canvas.polygon([self.point(-0.22, 0.3, 1.2), self.point(0.22, 0.3, 1.2), self.point(0, 0.4, 2.35)], shirt,
                           Part.UPPER)
            canvas.line([self.point(0, 0.3, 1.3), self.point(0, 0.4, 2.1)], c.accessory, Part.ACCESSORY,
                        max(1.0, 0.08 * u))
        elif kind == "tank top":
            canvas.ellipse(*self.point(0, 0.3, 1.25), self.half_width(0.26, 0.2), 0.2 * u, c.skin, Part.SKIN)

    def _pattern(self, canvas: Canvas, outline: list[tuple[float, float]]) -> None:
        pattern = self.attrs.get("upper_pattern", "plain")
        if pattern == "plain":
            return
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        img_w, img_h = canvas.image.size
        x0, y0 = max(0, int(min(xs))), max(0, int(min(ys)))
        x1, y1 = min(img_w, int(math.ceil(max(xs))) + 1), min(img_h, int(math.ceil(max(ys))) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        tile = self.colour.pattern_tile(pattern, x0, y0, x1, y1, self)
        if tile is not None:
            canvas.fill_pattern(outline, tile, (x0, y0), Part.UPPER)

    def _arm(self, canvas: Canvas, side: int) -> None:
        u = self.frame.u
        s = self.shoulder * 0.92
        elbow_lat = max(s + 0.12, self.waist + 0.3)  # arms hang clear of the waist and hips
        wrist_lat = max(s + 0.06, self.hip + 0.24)
        swing = -side * self.step * self.stride * 0.9  # arms swing against the leg on their side
        pose = self.arm_pose
        shoulder = (side * s, 0.0, 1.5)
        if pose == "phone" and side == 1 or pose == "carry":
            elbow, wrist = (side * (s + 0.05), 0.1, 2.85), (side * 0.3, 0.75, 2.75 if pose == "phone" else 3.3)
        elif pose == "jog":
            elbow = (side * elbow_lat, -swing * 0.5, 2.7)
            wrist = (side * (elbow_lat - 0.1), -swing * 0.5 + 0.6, 2.45)
        else:
            elbow = (side * elbow_lat, swing * 0.35, 2.8)
            wrist = (side * wrist_lat, swing * 0.85, 3.95)
        pts = [self.point(*shoulder), self.point(*elbow), self.point(*wrist)]
        w = u * self.limb
        widths = [0.36 * w * max(1.0, self.shoulder), 0.28 * w, 0.24 * w]
        sleeve = self.sleeve
        if sleeve is None:
            canvas.limb(pts, [wd + 1 for wd in widths], self.colour.sleeve, Part.SLEEVE)
        else:
            arm_rgb = (228, 228, 224) if self.attrs.get("upper_type") == "vest" else self.colour.skin
            canvas.limb(pts, widths, arm_rgb, Part.SKIN)
            if sleeve > 0:
                cover, cover_w = _cut_polyline(pts, widths, self.y(sleeve))
                canvas.limb(cover, [wd * 1.25 + 1 for wd in cover_w], self.colour.sleeve, Part.SLEEVE)
        hx, hy = self.point(wrist[0], wrist[1] + 0.05, wrist[2] + 0.2)
        canvas.ellipse(hx, hy, 0.13 * w, 0.15 * w, self.colour.skin, Part.SKIN)
        if self.attrs.get("accessory") == "wristwatch" and side == -1:
            wx, wy = self.point(*wrist)
            canvas.rectangle(wx - 0.12 * w, wy - 0.06 * w, wx + 0.12 * w, wy + 0.06 * w, DARK, Part.ACCESSORY)
        if pose == "phone" and side == 1 or self.attrs.get("accessory") == "phone in hand" and side == 1:
            canvas.rectangle(hx - 0.1 * u, hy - 0.2 * u, hx + 0.1 * u, hy + 0.05 * u, (30, 32, 38), Part.CARRIED,
                             radius=1)
        self._hand_bag(canvas, side, (hx, hy))

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
            vol = 1.04 + 0.1 * self.traits.hair_volume + (0.15 if self.attrs.get("hair_style") == "curly" else 0.0)
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
            hairline = 0.0 if hair_len in ("bald",) else 0.06 + 0.1 * self.traits.fringe * (hair_len != "very short")
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
        eyes = [(lat, 0.42 * hs) for lat in (-0.15 * hs, 0.15 * hs) if self.toward_camera(lat, 0.42 * hs) > 0.12]
        for lat, dep in eyes:
            ex, ey = self.point(lat, dep, 0.52)
            if acc == "sunglasses":
                canvas.ellipse(ex, ey, 0.09 * u, 0.065 * u, (15, 15, 18), Part.ACCESSORY)
            else:
                canvas.ellipse(ex, ey, max(0.6, 0.035 * u), max(0.6, 0.035 * u), (35, 28, 25), Part.SKIN)
                if acc == "glasses":
                    canvas.line([(ex - 0.08 * u, ey - 0.05 * u), (ex + 0.08 * u, ey - 0.05 * u),
                                 (ex + 0.08 * u, ey + 0.05 * u), (ex - 0.08 * u, ey + 0.05 * u),
                                 (ex - 0.08 * u, ey - 0.05 * u)], (30, 30, 34), Part.ACCESSORY, max(1, 0.025 * u))
        if acc == "face mask" and self.cos > -0.2:
            mx, my = self.point(0, 0.35 * hs, 0.78)
            canvas.rectangle(mx - self.half_width(0.26, 0.25), my - 0.13 * u, mx + self.half_width(0.26, 0.25),
                             my + 0.13 * u, self.colour.mask, Part.ACCESSORY, radius=2)
        elif self.cos > 0.5:
            mx, my = self.point(0, 0.45 * hs, 0.8)
            canvas.line([(mx - 0.07 * u, my), (mx + 0.07 * u, my)], (150, 80, 75), Part.SKIN, max(1, 0.03 * u))

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
            pts = [self.point(0, -0.45 * hs, 0.45), self.point(0, -0.55 * hs, 1.0), self.point(0, -0.5 * hs, end)]
            canvas.limb(pts, [0.28 * u, 0.24 * u, 0.1 * u], c.hair, Part.HAIR)
            if style == "braided":
                for y in np.arange(1.0, end, 0.3):
                    bx, by = self.point(0, -0.52 * hs, float(y))
                    canvas.line([(bx - 0.08 * u, by), (bx + 0.08 * u, by + 0.1 * u)], c.hair_dark, Part.HAIR, 1)
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
            pts = [(cx - top, y0), (cx + top, y0), (cx + low * 1.1, (y0 + y1) / 2), (cx + low, y1),
                   (cx, y1 + 0.15 * u), (cx - low, y1), (cx - low * 1.1, (y0 + y1) / 2)]
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
                canvas.ellipse(bx + (bx - cx) * 0.4, cy - 0.02 * u, brim, 0.06 * u, self.colour.headwear_dark,
                               Part.HEADWEAR)
        elif kind == "beanie":
            canvas.chord(cx, cy + 0.05 * u, rx * 1.1, ry * 1.12, 180, 360, rgb, Part.HEADWEAR)
            canvas.rectangle(cx - rx * 1.1, cy - 0.05 * u, cx + rx * 1.1, cy + 0.08 * u, self.colour.headwear_dark,
                             Part.HEADWEAR)
        elif kind in ("sun hat", "bucket hat"):
            wide = 1.9 if kind == "sun hat" else 1.4
            canvas.ellipse(cx, cy - 0.12 * u, rx * wide, 0.1 * u, self.colour.headwear_dark, Part.HEADWEAR)
            canvas.chord(cx, cy - 0.1 * u, rx * 1.02, ry * 0.95, 180, 360, rgb, Part.HEADWEAR)
        elif kind == "helmet":
            canvas.chord(cx, cy + 0.02 * u, rx * 1.18, ry * 1.12, 180, 360, rgb, Part.HEADWEAR)
            canvas.ellipse(cx - rx * 0.35, cy - ry * 0.6, rx * 0.25, ry * 0.12, (240, 240, 240), Part.HEADWEAR)
        else:  # an unknown headwear value: a generic cap in its colour
            canvas.chord(cx, cy, rx * 1.08, ry * 1.05, 180, 360, rgb, Part.HEADWEAR)
        if self.attrs.get("accessory") == "headphones":
            canvas.line([(cx - rx, cy), (cx, cy - ry * 1.15), (cx + rx, cy)], DARK, Part.ACCESSORY, 0.06 * u)

    # -- bags and carried things ------------------------------------------------------------------------
    def _bag_depth(self, bag: str) -> float:
        if bag == "backpack":
            return self.toward_camera(0.0, -0.6)
        if bag in ("shoulder bag", "messenger bag", "tote bag"):
            return self.toward_camera(self.traits.bag_side * (self.hip + 0.2), 0.0)
        return 0.0  # carried in the hand: drawn with the arm

    def _bag(self, canvas: Canvas, bag: str) -> None:
        u = self.frame.u
        rgb, dark = self.colour.bag, self.colour.bag_dark
        if bag == "backpack":
            cx, y0 = self.x(0, -0.6), self.y(1.55)
            hw = self.half_width(0.58 * self.shoulder, 0.3)
            y1 = self.y(3.55)
            canvas.rectangle(cx - hw, y0, cx + hw, y1, rgb, Part.BAG, radius=0.25 * u)
            if self.cos < -0.3:  # the back view: front pocket and flap
                canvas.rectangle(cx - hw * 0.7, self.y(2.7), cx + hw * 0.7, self.y(3.4), dark, Part.BAG, radius=2)
                canvas.line([(cx - hw, self.y(1.95)), (cx + hw, self.y(1.95))], dark, Part.BAG, 0.05 * u)
            return
        side = self.traits.bag_side
        lat = side * (self.hip + 0.2)
        if bag in ("shoulder bag", "messenger bag", "tote bag"):
            strap_top = self.point(-side * self.shoulder * 0.6, 0.0, 1.35)
            y0, y1 = (3.2, 4.0) if bag == "shoulder bag" else (3.1, 4.05) if bag == "messenger bag" else (2.9, 4.3)
            if bag == "tote bag":
                strap_top = self.point(side * self.shoulder * 0.7, 0.0, 1.4)
            canvas.line([strap_top, self.point(lat, 0, y0)], dark, Part.BAG, max(1.0, 0.06 * u))
            depth = 0.45 if bag != "shoulder bag" else 0.35
            cx, hw = self.x(lat, 0), self.half_width(0.14, depth)
            canvas.rectangle(cx - hw, self.y(y0), cx + hw, self.y(y1), rgb, Part.BAG, radius=2)
            if bag == "messenger bag" and hw > 2:
                canvas.rectangle(cx - hw, self.y(y0), cx + hw, self.y(y0 + 0.35), dark, Part.BAG, radius=2)

    def _hand_bag(self, canvas: Canvas, side: int, hand: tuple[float, float]) -> None:
        bag = self.attrs.get("bag", "none")
        if bag not in ("handbag", "plastic bag", "suitcase", "briefcase") or side != self.traits.bag_side:
            return
        if self.arm_pose in ("carry",) and bag != "suitcase":
            return
        u = self.frame.u
        hx, hy = hand
        rgb, dark = self.colour.bag, self.colour.bag_dark
        if bag == "suitcase":
            cx = self.x(side * (self.shoulder + 0.45), 0.1)
            hw = self.half_width(0.25, 0.55)
            top, bottom = self.y(4.6), self.y(self.total - 0.05)
            canvas.line([(hx, hy), (cx, top)], (60, 60, 64), Part.BAG, max(1.0, 0.05 * u))
            canvas.rectangle(cx - hw, top, cx + hw, bottom, rgb, Part.BAG, radius=2)
            canvas.line([(cx, top + 2), (cx, bottom - 2)], dark, Part.BAG, 1)
            return
        size = {"handbag": (0.32, 0.5), "plastic bag": (0.3, 0.75), "briefcase": (0.5, 0.6)}[bag]
        hw = self.half_width(0.12, size[0])
        hw = max(hw, 0.12 * u)
        top = hy + 0.15 * u
        if bag != "briefcase":
            canvas.line([(hx - hw * 0.6, top), (hx, hy), (hx + hw * 0.6, top)], dark, Part.BAG, max(1.0, 0.04 * u))
        canvas.rectangle(hx - hw, top, hx + hw, top + size[1] * u, rgb, Part.BAG, radius=2)

    def _backpack_straps(self, canvas: Canvas) -> None:
        u = self.frame.u
        for side in (1, -1):
            if self.toward_camera(side * 0.4, 0.3) > -0.2:
                canvas.line([self.point(side * 0.4, 0.3, 1.3), self.point(side * 0.45, 0.38, 2.7)], self.colour.bag_dark,
                            Part.BAG, max(1.0, 0.07 * u))

    def _held(self, canvas: Canvas) -> None:
        u = self.frame.u
        if self.arm_pose == "carry":
            cx, cy = self.point(0, 0.75, 3.2)
            if self.toward_camera(0, 0.75) > -0.3:
                hw = self.half_width(0.45, 0.3)
                canvas.rectangle(cx - hw, cy - 0.3 * u, cx + hw, cy + 0.35 * u, (170, 130, 85), Part.CARRIED)
        if self.attrs.get("accessory") == "umbrella":
            hx, hy = self.point(self.shoulder * 0.3, 0.3, 2.6)
            top_y = self.y(-0.35)
            canvas.line([(hx, hy), (hx, top_y)], (40, 40, 40), Part.CARRIED, max(1.0, 0.05 * u))
            canvas.chord(hx, top_y + 0.2 * u, 1.5 * u, 0.75 * u, 180, 360, self.colour.accessory, Part.CARRIED)


class _Palette:
    """The figure's exact colours: palette colour of each attribute, shifted by the identity's shade."""

    def __init__(self, attrs: dict[str, str], colours: Colours, traits: IdentityTraits, names: list[str]):
        sh = traits.shade
        self.upper_f = jitter(colours.rgb(attrs.get("upper_color", "grey")), sh["upper"])
        self.upper = to255(self.upper_f)
        self.upper_dark = to255(self.upper_f * 0.72)
        self.sleeve = to255(self.upper_f * 0.9)  # sleeves a shade darker: the arm reads against the body
        self.upper_light = to255(self.upper_f * 0.7 + 0.3)
        lower = jitter(colours.rgb(attrs.get("lower_color", "black")), sh["lower"])
        self.lower, self.lower_dark = to255(lower), to255(lower * 0.75)
        hair = jitter(colours.rgb(attrs.get("hair_color", "black")), sh["hair"])
        self.hair, self.hair_dark = to255(hair), to255(hair * 0.7)
        self.skin = to255(jitter(colours.skin(attrs.get("skin_tone", "medium")), sh["skin"] * 0.5))
        self.shoe = to255(jitter(colours.rgb(attrs.get("footwear_color", "black")), sh["footwear"]))
        hw = jitter(colours.rgb(attrs.get("headwear_color", "black")), sh["headwear"])
        if attrs.get("headwear") == "hood up" and attrs.get("upper_type") == "hoodie":
            hw = self.upper_f  # the hood is part of the hoodie
        self.headwear, self.headwear_dark = to255(hw), to255(hw * 0.75)
        bag = jitter(colours.rgb(attrs.get("bag_color", "black")), sh["bag"])
        self.bag, self.bag_dark = to255(bag), to255(bag * 0.7)
        # The pattern's second colour and the accessory colour: a palette colour chosen per identity,
        # never the garment's own colour.
        upper_name = attrs.get("upper_color", "")
        choices = [n for n in names if n != upper_name] or ["white"]
        second = colours.rgb(choices[int(traits.second_colour * len(choices)) % len(choices)])
        if float(np.abs(second - self.upper_f).sum()) < 0.45:  # too close to read: use black or white
            second = np.array([0.92, 0.92, 0.9] if self.upper_f.mean() < 0.5 else [0.1, 0.1, 0.11], np.float32)
        self.second_f = jitter(second, sh["second"])
        self.accessory = to255(colours.rgb(choices[int(traits.accessory_colour * 997) % len(choices)]) * 0.85)
        self.mask = (232, 236, 240) if traits.accessory_colour < 0.6 else (150, 190, 225)
        self._traits = traits

    def pattern_tile(self, pattern: str, x0: int, y0: int, x1: int, y1: int, fig: Figure) -> np.ndarray | None:
        """The garment's pattern over the pixel box [x0, x1) x [y0, y1), in the figure's head units so the
        pattern scales with the person."""
        t = self._traits
        u = fig.frame.u
        ys = (np.arange(y0, y1, dtype=np.float32)[:, None] - fig.frame.top) / u
        xs = (np.arange(x0, x1, dtype=np.float32)[None, :] - fig.frame.cx) / u
        base, second = self.upper_f, self.second_f
        period = t.pattern_period
        phase = t.pattern_phase * period
        if pattern == "striped":
            coord = xs if t.pattern_angle else ys
            mask = ((coord + phase) % period) < period * 0.45
        elif pattern == "checked":
            mask = (((ys + phase) // (period * 1.2)) + ((xs + phase) // (period * 1.2))) % 2 == 0
        elif pattern == "plaid":
            p2 = period * 1.6
            mask = (((ys + phase) % p2) < p2 * 0.22) | (((xs + phase) % p2) < p2 * 0.22)
        elif pattern in ("polka-dot", "floral"):
            p2 = period * (1.0 if pattern == "polka-dot" else 1.4)
            row = np.floor((ys + phase) / p2)
            dx = ((xs + phase + row * p2 * 0.5) % p2) - p2 / 2
            dy = ((ys + phase) % p2) - p2 / 2
            r = p2 * (0.22 if pattern == "polka-dot" else 0.34)
            mask = dx * dx + dy * dy < r * r
        elif pattern == "color-block":
            split = 2.2 + 0.8 * t.pattern_phase
            mask = (xs * (1 if t.print_offset > 0 else -1) > 0) if t.pattern_angle else (ys > split)
            mask = np.broadcast_to(mask, (ys.shape[0], xs.shape[1]))
        elif pattern in ("graphic print", "logo"):
            if fig.cos < 0.25:  # prints are on the chest: not seen from behind
                return None
            if pattern == "logo":
                cx, cy, r = -0.35 * np.sign(fig.cos) * 0.8 * fig.cos, 1.95, 0.13 * t.print_scale
            else:
                cx, cy, r = 0.12 * t.print_offset * fig.cos, 2.35, 0.42 * t.print_scale * max(fig.cos, 0.4)
            dx, dy = xs - cx, ys - cy
            if t.print_shape == 0:
                mask = dx * dx + dy * dy < r * r
            elif t.print_shape == 1:
                mask = (np.abs(dx) < r) & (np.abs(dy) < r * 0.8)
            elif t.print_shape == 2:
                mask = (dy < r * 0.7) & (np.abs(dx) * 1.6 < (dy + r * 0.9))
            else:
                mask = (np.abs(dx) < r) & (np.abs(dy) < r * 0.8) & (((dy / max(r, 1e-3) * 3) % 1) < 0.6)
            mask = np.broadcast_to(mask, (ys.shape[0], xs.shape[1]))
        else:  # an unknown pattern: a hashed, deterministic texture in the second colour (sparse stripes)
            mask = ((xs + ys + phase) % (period * 2)) < period * 0.3
        mask = np.broadcast_to(mask, (ys.shape[0], xs.shape[1]))
        tile = np.where(mask[..., None], second, base)
        return (tile * 255.0 + 0.5).astype(np.uint8)


def _cut_polyline(points: list[tuple[float, float]], widths: list[float], y_end: float):
    """The part of a (downward) polyline above image row y_end, with interpolated widths."""
    out, out_w = [points[0]], [widths[0]]
    for (x0, y0), (x1, y1), w0, w1 in zip(points, points[1:], widths, widths[1:], strict=False):
        if y1 <= y_end:
            out.append((x1, y1))
            out_w.append(w1)
            continue
        if y0 < y_end < y1 or y_end <= y0:
            t = 0.0 if y_end <= y0 else (y_end - y0) / (y1 - y0)
            out.append((x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
            out_w.append(w0 + (w1 - w0) * t)
        break
    return out, out_w
