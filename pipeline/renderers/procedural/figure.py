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

from dppp.pipeline.renderers.procedural.canvas import Canvas, Frame, Part
from dppp.pipeline.renderers.procedural.carried import CarriedDrawing
from dppp.pipeline.renderers.procedural.colours import DARK, Colours
from dppp.pipeline.renderers.procedural.head import HeadDrawing
from dppp.pipeline.renderers.procedural.palette import Palette
from dppp.pipeline.renderers.procedural.traits import IdentityTraits, ViewTraits

YAW = {  # degrees; left-family views show the person's left side, so they face the image left
    "front": 0.0,
    "front-left three-quarter": 45.0,
    "left side": 90.0,
    "back-left three-quarter": 135.0,
    "back": 180.0,
    "back-right three-quarter": 225.0,
    "right side": 270.0,
    "front-right three-quarter": 315.0,
}
BUILD = {  # shoulder, waist, hip, limb thickness multipliers
    "slim": (0.92, 0.86, 0.92, 0.85),
    "average": (1.0, 1.0, 1.0, 1.0),
    "athletic": (1.1, 0.94, 0.98, 1.08),
    "heavy": (1.12, 1.38, 1.25, 1.25),
}
# Upper garments: hem (hu from the head top), sleeve end (None: long to the wrist, 0: sleeveless, else y).
UPPER = {
    "t-shirt": (3.95, 2.35),
    "shirt": (4.0, None),
    "polo shirt": (3.95, 2.3),
    "sweater": (3.95, None),
    "hoodie": (4.05, None),
    "jacket": (4.1, None),
    "coat": (5.55, None),
    "blouse": (3.9, None),
    "tank top": (3.9, 0.0),
    "dress": (5.45, 2.25),
    "suit jacket": (4.2, None),
    "vest": (3.85, 0.0),
}
# Lower garments: hem y in hu (None: to the ankle), flare (skirts), leg width multiplier.
LOWER = {
    "jeans": (None, 0.0, 1.0),
    "trousers": (None, 0.0, 1.05),
    "shorts": (4.85, 0.0, 1.15),
    "sweatpants": (None, 0.0, 1.18),
    "skirt": (5.35, 0.35, 1.0),
    "long skirt": (6.85, 0.5, 1.0),
    "leggings": (None, 0.0, 0.86),
    "cargo pants": (None, 0.0, 1.15),
}
STRIDE = {  # leg stride, arm pose
    "walking": (0.55, "swing"),
    "standing": (0.0, "hang"),
    "standing still looking at a phone": (0.0, "phone"),
    "jogging": (0.85, "jog"),
    "carrying something": (0.35, "carry"),
    "waiting": (0.05, "hang"),
    "mid-stride crossing": (0.8, "swing"),
}
SHOE_COLOURED_SOLE = {"sneakers", "running shoes"}


def heads_tall(attrs: dict[str, str], traits: IdentityTraits) -> float:
    """The body's height in head units (teenagers have relatively bigger heads)."""
    return traits.heads_tall - (0.3 if attrs.get("age_group") == "teenage" else 0.0)


class Figure(HeadDrawing, CarriedDrawing):
    """One pedestrian: body shape from the attributes, projection to the viewpoint, and the body and
    garments drawn back to front; the head (procedural_head) and bags (procedural_carried) are drawn by
    the mixins it inherits."""

    def __init__(
        self,
        attrs: dict[str, str],
        colours: Colours,
        traits: IdentityTraits,
        view: ViewTraits,
        frame: Frame,
        second_colour_names: list[str],
    ):
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
        self.colour = Palette(attrs, colours, traits, second_colour_names)
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
        legs = sorted(
            (self.toward_camera(side * self.hip * 0.5, self._foot_depth(side)), side) for side in (1, -1)
        )
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
                canvas.rectangle(
                    px - 0.12 * w, py, px + 0.12 * w, py + 0.3 * w, self.colour.lower_dark, Part.LOWER
                )
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
            canvas.rectangle(
                cx - half_w,
                top + (bottom - top) * 0.4,
                cx + half_w,
                top + (bottom - top) * 0.6,
                rgb,
                Part.SHOE,
            )
            canvas.rectangle(cx - half_w, bottom - 1.5, cx + half_w, bottom, rgb, Part.SHOE)
            return
        if kind == "high heels":
            bottom = self.y(ankle_y + 0.32)
            top = self.y(ankle_y + 0.02)
        canvas.rectangle(cx - half_w, top, cx + half_w, bottom, rgb, Part.SHOE, radius=max(1.0, half_w * 0.5))
        if kind in SHOE_COLOURED_SOLE:
            sole = (238, 238, 236) if self.attrs.get("footwear_color") != "white" else (120, 120, 124)
            canvas.rectangle(
                cx - half_w, bottom - max(1.5, 0.07 * self.frame.u), cx + half_w, bottom, sole, Part.SHOE
            )

    def _lower_body(self, canvas: Canvas) -> None:
        """Pelvis of trousers, or the whole skirt."""
        top = 2.95
        hip = self.hip * (1.0 + 0.1 * (self.leg_fill - 1.0))
        if self.flare > 0.0:
            hem = self.lower_hem or 5.35
            pts = self._section(
                [(top, self.waist * 1.02, 0.4), (3.7, hip * 1.05, 0.45), (hem, hip * (1.0 + self.flare), 0.6)]
            )
        else:
            pts = self._section(
                [(top, self.waist * 1.02, 0.4), (3.7, hip, 0.45), (self.crotch, hip * 0.95, 0.45)]
            )
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
        canvas.rectangle(
            neck[0] - nw,
            neck[1] - 0.1 * self.frame.u,
            neck[0] + nw,
            self.y(1.45),
            self.colour.skin,
            Part.SKIN,
        )
        s, w, h = self.shoulder, self.waist, self.hip
        hem = self.hem
        hem_w = h * (1.2 if kind == "coat" else 1.35 if kind == "dress" else 1.04)
        rows = [
            (1.18, s * 0.45, 0.3),
            (1.33, s * 0.85, 0.34),
            (1.55, s, 0.36),
            (2.1, s * 0.93, 0.38),
            (3.0, max(w, s * 0.72), 0.36),
            (min(hem, 3.7), max(h, w) * 1.04, 0.38),
            (hem, hem_w, 0.42),
        ]
        pts = self._section(rows)
        canvas.polygon(pts, self.colour.upper, Part.UPPER)
        self._pattern(canvas, pts)
        front = self.cos > 0.25
        if front:
            self._garment_front(canvas, kind)
        elif kind == "hoodie" and self.attrs.get("headwear") != "hood up":
            # the lowered hood lies on the upper back
            hx, hy = self.point(0, -0.2, 1.55)
            canvas.ellipse(
                hx, hy, self.half_width(0.45, 0.2), 0.35 * self.frame.u, self.colour.upper_dark, Part.UPPER
            )
        if self.attrs.get("accessory") == "scarf":
            sx, sy = self.point(0, 0.05, 1.25)
            canvas.rectangle(
                sx - self.half_width(0.36, 0.3),
                sy - 0.12 * self.frame.u,
                sx + self.half_width(0.36, 0.3),
                sy + 0.2 * self.frame.u,
                self.colour.accessory,
                Part.ACCESSORY,
                radius=2,
            )

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
                canvas.rectangle(
                    px - self.half_width(0.42, 0.2),
                    py,
                    px + self.half_width(0.42, 0.2),
                    py + 0.4 * u,
                    c.upper_dark,
                    Part.UPPER,
                    radius=2,
                )
        elif kind in ("suit jacket", "vest"):  # lapels over a light shirt
            shirt = (228, 228, 224)
            canvas.polygon(
                [self.point(-0.22, 0.3, 1.2), self.point(0.22, 0.3, 1.2), self.point(0, 0.4, 2.35)],
                shirt,
                Part.UPPER,
            )
            canvas.line(
                [self.point(0, 0.3, 1.3), self.point(0, 0.4, 2.1)],
                c.accessory,
                Part.ACCESSORY,
                max(1.0, 0.08 * u),
            )
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
        tile = self.colour.pattern_tile(pattern, x0, y0, x1, y1, self.frame, self.cos)
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
            elbow, wrist = (
                (side * (s + 0.05), 0.1, 2.85),
                (side * 0.3, 0.75, 2.75 if pose == "phone" else 3.3),
            )
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
            canvas.rectangle(
                hx - 0.1 * u, hy - 0.2 * u, hx + 0.1 * u, hy + 0.05 * u, (30, 32, 38), Part.CARRIED, radius=1
            )
        self._hand_bag(canvas, side, (hx, hy))


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
