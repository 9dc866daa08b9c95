"""The procedural figure's colours: each attribute's palette colour shifted by the identity's shade, and the
garment pattern drawn in the figure's head units."""

from __future__ import annotations

import numpy as np

from dppp.pipeline.renderers.procedural.canvas import Frame
from dppp.pipeline.renderers.procedural.colours import Colours, jitter, to255
from dppp.pipeline.renderers.procedural.traits import IdentityTraits


class Palette:
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
            second = np.array(
                [0.92, 0.92, 0.9] if self.upper_f.mean() < 0.5 else [0.1, 0.1, 0.11], np.float32
            )
        self.second_f = jitter(second, sh["second"])
        self.accessory = to255(colours.rgb(choices[int(traits.accessory_colour * 997) % len(choices)]) * 0.85)
        self.mask = (232, 236, 240) if traits.accessory_colour < 0.6 else (150, 190, 225)
        self._traits = traits

    def pattern_tile(
        self, pattern: str, x0: int, y0: int, x1: int, y1: int, frame: Frame, cos: float
    ) -> np.ndarray | None:
        """The garment's pattern over the pixel box [x0, x1) x [y0, y1), in the figure's head units so the
        pattern scales with the person; `cos`: the figure's facing (1 towards the camera, -1 away)."""
        t = self._traits
        u = frame.u
        ys = (np.arange(y0, y1, dtype=np.float32)[:, None] - frame.top) / u
        xs = (np.arange(x0, x1, dtype=np.float32)[None, :] - frame.cx) / u
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
            if cos < 0.25:  # prints are on the chest: not seen from behind
                return None
            if pattern == "logo":
                cx, cy, r = -0.35 * np.sign(cos) * 0.8 * cos, 1.95, 0.13 * t.print_scale
            else:
                cx, cy, r = 0.12 * t.print_offset * cos, 2.35, 0.42 * t.print_scale * max(cos, 0.4)
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
