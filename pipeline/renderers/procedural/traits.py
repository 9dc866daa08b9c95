"""Per-identity and per-view continuous variation for the procedural renderer.

Identities that share every coarse attribute must still differ (otherwise Re-ID on the procedural set is
ill-posed): `IdentityTraits` draws exact shades, body proportions, pattern period and phase, print shape
and hair volume from the identity seed alone, so every view of a person agrees on them. `ViewTraits` draws
what changes from shot to shot from the view seed: gait phase, framing jitter, light direction, the
background crop. Both use counter-based Philox streams keyed by (seed, stream id): no global state, the
same numbers in any process and any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

IDENTITY_STREAM = 0x1D
VIEW_STREAM = 0x5E
# The photo look's own streams (procedural/look.py): it draws from these and never from the two above, so
# the default look consumes its streams exactly as it did before looks existed. (0x5C: scene backdrops.)
LOOK_IDENTITY_STREAM = 0x7A
LOOK_VIEW_STREAM = 0x7B


def philox(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=[seed % 2**64, stream]))


@dataclass(frozen=True)
class IdentityTraits:
    shade: dict[str, np.ndarray]  # per colour slot: 3 values in [-1, 1] for colours.jitter
    heads_tall: float  # body height in head units
    head_scale: float
    shoulder_scale: float
    hip_scale: float
    leg_scale: float  # knee height shift (longer / shorter legs)
    limb_scale: float  # arm / leg thickness
    stride_scale: float
    pattern_period: float  # head units
    pattern_phase: float  # 0..1
    pattern_angle: int  # 0: horizontal, 1: vertical (stripes / colour blocks)
    second_colour: float  # 0..1: picks the pattern's second colour from the palette
    print_shape: int
    print_scale: float
    print_offset: float
    hair_volume: float  # 0..1
    fringe: float  # 0..1
    bag_side: int  # +1: the person's right, -1: left
    accessory_colour: float  # 0..1: scarf / mask / umbrella colour
    frame_offset: float  # -1..1: habitual position in the box (detector bias per person)


SHADE_SLOTS = ("upper", "lower", "hair", "skin", "footwear", "headwear", "bag", "second")


@lru_cache(maxsize=1024)  # views of one identity are rendered together: draw its traits once
def identity_traits(identity_seed: int) -> IdentityTraits:
    rng = philox(identity_seed, IDENTITY_STREAM)
    # One fixed-length draw, consumed in a fixed order: adding a trait at the end never shifts the others.
    u = rng.random(64)
    shade = {slot: (u[3 * i : 3 * i + 3] * 2 - 1).astype(np.float32) for i, slot in enumerate(SHADE_SLOTS)}
    for values in shade.values():
        values.setflags(write=False)  # the traits are cached and shared between views
    k = 3 * len(SHADE_SLOTS)  # 24
    return IdentityTraits(
        shade=shade,
        heads_tall=7.1 + 0.6 * u[k],
        head_scale=0.93 + 0.14 * u[k + 1],
        shoulder_scale=0.9 + 0.2 * u[k + 2],
        hip_scale=0.9 + 0.2 * u[k + 3],
        leg_scale=-0.2 + 0.4 * u[k + 4],
        limb_scale=0.88 + 0.24 * u[k + 5],
        stride_scale=0.75 + 0.5 * u[k + 6],
        pattern_period=0.2 + 0.3 * u[k + 7],
        pattern_phase=float(u[k + 8]),
        pattern_angle=int(u[k + 9] < 0.3),
        second_colour=float(u[k + 10]),
        print_shape=int(u[k + 11] * 4),
        print_scale=0.75 + 0.5 * u[k + 12],
        print_offset=-1 + 2 * u[k + 13],
        hair_volume=float(u[k + 14]),
        fringe=float(u[k + 15]),
        bag_side=1 if u[k + 16] < 0.5 else -1,
        accessory_colour=float(u[k + 17]),
        frame_offset=-1 + 2 * u[k + 18],
    )


@dataclass(frozen=True)
class ViewTraits:
    gait_phase: float  # -1..1: which leg is forward, and how far through the step
    scale_jitter: float  # -1..1
    shift_x: float  # -1..1
    shift_y: float  # -1..1
    light_side: int  # +1: light from the image right, -1: from the left
    light_elevation: float  # 0..1
    background_offset: float  # 0..1: horizontal crop position in the wide scene
    rng: np.random.Generator  # what is left of the stream: noise, rain, snow


def view_traits(seed: int) -> ViewTraits:
    rng = philox(seed, VIEW_STREAM)
    u = rng.random(8)
    return ViewTraits(
        gait_phase=float(u[0] * 2 - 1),
        scale_jitter=float(u[1] * 2 - 1),
        shift_x=float(u[2] * 2 - 1),
        shift_y=float(u[3] * 2 - 1),
        light_side=1 if u[4] < 0.5 else -1,
        light_elevation=float(u[5]),
        background_offset=float(u[6]),
        rng=rng,
    )
