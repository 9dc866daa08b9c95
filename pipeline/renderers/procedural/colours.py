"""Colours for the procedural renderer: the taxonomy's palette, skin tones, and a fallback for the unknown.

The taxonomy's `palette:` names the RGB of every colour value, so a garment is drawn in exactly the colour
its prompt names. A value that no table knows (a user's own taxonomy) still renders, in a colour derived
from a stable hash of its name: the same name always gives the same colour, on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from dppp.prompts.taxonomy import load_taxonomy

DARK = (22, 22, 24)  # near-black details of the figure: a watch, headphones

# Skin tones are an identity dimension without palette entries (they are not garment colours).
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "very light": (241, 214, 196),
    "light": (228, 189, 160),
    "medium": (200, 152, 115),
    "olive-toned": (184, 145, 100),
    "brown": (140, 95, 62),
    "dark brown": (90, 58, 38),
}


def stable_unit(text: str) -> float:
    """A number in [0, 1) from a string, identical in every process (unlike Python's salted hash())."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def hash_colour(name: str) -> tuple[int, int, int]:
    """A deterministic, reasonably saturated colour for a name no table knows."""
    digest = hashlib.sha256(("colour:" + name).encode("utf-8")).digest()
    return tuple(int(40 + b * 180 / 255) for b in digest[:3])  # type: ignore[return-value]


@lru_cache(maxsize=8)
def _read_palette(path: str | None) -> dict[str, tuple[int, int, int]]:
    # The prompt engine's loader: the whole taxonomy is validated, with its file named in any error.
    return {
        name: (int(rgb[0]), int(rgb[1]), int(rgb[2])) for name, rgb in load_taxonomy(path).palette.items()
    }


def load_palette(taxonomy: str | Path | None = None) -> dict[str, tuple[int, int, int]]:
    """The `palette:` of a taxonomy YAML (None: the taxonomy shipped with dppp)."""
    return dict(_read_palette(str(taxonomy) if taxonomy is not None else None))


class Colours:
    """Looks up the 0..1 float RGB of colour values and skin tones, with hashed fallbacks."""

    def __init__(self, palette: Mapping[str, tuple[int, int, int]]):
        self._palette = dict(palette)
        self._cache: dict[str, np.ndarray] = {}

    def rgb255(self, name: str) -> tuple[int, int, int]:
        return self._palette.get(name) or hash_colour(name)

    def rgb(self, name: str) -> np.ndarray:
        found = self._cache.get(name)
        if found is None:
            found = np.asarray(self.rgb255(name), dtype=np.float32) / 255.0
            self._cache[name] = found
        return found

    @staticmethod
    def skin(tone: str) -> np.ndarray:
        rgb = SKIN_TONES.get(tone)
        if rgb is None:  # an unknown tone: somewhere on the line between the lightest and darkest tone
            t = stable_unit("skin:" + tone)
            light, dark = np.array(SKIN_TONES["very light"]), np.array(SKIN_TONES["dark brown"])
            return ((1 - t) * light + t * dark).astype(np.float32) / 255.0
        return np.asarray(rgb, dtype=np.float32) / 255.0


def jitter(rgb: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Shift a colour by a per-identity offset (amount: 3 values in [-1, 1]) while keeping its identity:
    a shared brightness change plus a smaller per-channel one."""
    shade = 1.0 + 0.07 * amount[0]
    tint = np.array([amount[1], amount[2], -0.5 * (amount[1] + amount[2])], dtype=np.float32) * 0.03
    out = rgb * shade + tint
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def to255(rgb: np.ndarray) -> tuple[int, int, int]:
    """Float RGB (0..1) to the integer tuple PIL's drawing functions take."""
    r, g, b = (min(255, max(0, int(c * 255.0 + 0.5))) for c in rgb.tolist())
    return (r, g, b)
