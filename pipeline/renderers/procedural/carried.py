"""What the procedural figure carries: bags on the back, shoulder or hip, bags in the hand, a box held in
both hands, an umbrella.

A mixin of `Figure` (procedural_figure.py): it draws with the figure's projection and measures. A bag is
described once in the body frame, so its depth (`_bag_depth`) tells `Figure.draw` whether it goes behind
or in front of the body in each view.
"""

from __future__ import annotations

from dppp.pipeline.renderers.procedural.canvas import Canvas, Part


class CarriedDrawing:
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
                canvas.rectangle(
                    cx - hw * 0.7, self.y(2.7), cx + hw * 0.7, self.y(3.4), dark, Part.BAG, radius=2
                )
                canvas.line([(cx - hw, self.y(1.95)), (cx + hw, self.y(1.95))], dark, Part.BAG, 0.05 * u)
            return
        side = self.traits.bag_side
        lat = side * (self.hip + 0.2)
        if bag in ("shoulder bag", "messenger bag", "tote bag"):
            strap_top = self.point(-side * self.shoulder * 0.6, 0.0, 1.35)
            y0, y1 = (
                (3.2, 4.0) if bag == "shoulder bag" else (3.1, 4.05) if bag == "messenger bag" else (2.9, 4.3)
            )
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
            canvas.line(
                [(hx - hw * 0.6, top), (hx, hy), (hx + hw * 0.6, top)], dark, Part.BAG, max(1.0, 0.04 * u)
            )
        canvas.rectangle(hx - hw, top, hx + hw, top + size[1] * u, rgb, Part.BAG, radius=2)

    def _backpack_straps(self, canvas: Canvas) -> None:
        u = self.frame.u
        for side in (1, -1):
            if self.toward_camera(side * 0.4, 0.3) > -0.2:
                canvas.line(
                    [self.point(side * 0.4, 0.3, 1.3), self.point(side * 0.45, 0.38, 2.7)],
                    self.colour.bag_dark,
                    Part.BAG,
                    max(1.0, 0.07 * u),
                )

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
            canvas.chord(
                hx, top_y + 0.2 * u, 1.5 * u, 0.75 * u, 180, 360, self.colour.accessory, Part.CARRIED
            )
