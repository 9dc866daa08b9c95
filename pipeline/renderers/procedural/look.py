"""The procedural renderer's looks: *how* a picture is made, apart from *what* it shows.

`illustration` (the default) is the renderer as it has always drawn: flat garment fills with ink
outlines, then procedural/style.py's light, weather, per-camera tone curves and camera quality. `photo`
draws the same people, in the same poses, light, weather and cameras, through another image-making
pipeline: the kind of gap that separates a synthetic source domain from a real target domain.

- texture: garments carry cloth (a weave and a roughness per identity, hanging folds);
  skin, hair and the backdrop a finer grain; part outlines are soft contact shadows instead of ink;
- proportions: a longer body in head units (smaller head, longer legs, broader shoulders) and looser
  framing (a detector's box with more margin), so the person is smaller in the frame;
- colour response: a warm white balance, a filmic S-shaped tone curve, more saturation, lens vignetting;
- sensor: chroma noise at half resolution instead of the default look's luminance noise, in-camera
  sharpening (unsharp-mask halos), then JPEG at quality 60 with 4:2:0 chroma (8x8 blocks).

Identity cues survive: texture and vignetting scale the three channels alike, so a garment's hue moves
only with the white balance and saturation, by a few degrees (tests/pipeline/test_procedural_looks.py
bounds it).

Randomness: only from the look's own Philox streams (procedural/traits.py): LOOK_IDENTITY_STREAM, keyed
by the identity seed (the fabric of a person's clothes, the same in every view), and LOOK_VIEW_STREAM,
keyed by the view seed (folds, grain, sensor noise). The default look never touches them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageEnhance, ImageFilter

from dppp.pipeline.renderers.procedural.canvas import Part
from dppp.pipeline.renderers.procedural.traits import (
    LOOK_IDENTITY_STREAM,
    LOOK_VIEW_STREAM,
    IdentityTraits,
    identity_traits,
    philox,
)

TALLER = 0.45  # head units added to the body: the same person with a relatively smaller head
FRAMING = 0.92  # figure height / frame height, relative to the default look's framing
OUTLINE = 0.93  # part boundaries darkened to this (the default look's ink outline is 0.78)
WHITE_BALANCE = (1.04, 1.0, 0.94)
SATURATION = 1.12
SURFACE = 0.04  # amplitude of the backdrop's surface blotches
VIGNETTE = 0.22  # brightness lost in the frame's corners
JPEG_QUALITY = 60
CHROMA_NOISE = 5.0  # per-channel noise std, 0..255 scale, at half resolution
LUMA_NOISE = 2.0


@dataclass(frozen=True)
class Fabric:
    """A person's cloth: the same in every view of them."""

    roughness: float  # 0.6..1.4: amplitude of folds and weave
    period: int  # weave period in pixels: 2 or 3
    diagonal: int  # +1 / -1: the twill's direction


@lru_cache(maxsize=1024)
def fabric(identity_seed: int) -> Fabric:
    u = philox(identity_seed, LOOK_IDENTITY_STREAM).random(3)
    return Fabric(
        roughness=0.6 + 0.8 * float(u[0]), period=2 + int(u[1] < 0.5), diagonal=1 if u[2] < 0.5 else -1
    )


@lru_cache(maxsize=1024)
def photo_traits(identity_seed: int) -> IdentityTraits:
    """The identity's traits with the photo look's proportions."""
    traits = identity_traits(identity_seed)
    return replace(
        traits,
        heads_tall=traits.heads_tall + TALLER,
        head_scale=traits.head_scale * 0.95,
        shoulder_scale=traits.shoulder_scale * 1.04,
        leg_scale=traits.leg_scale + 0.15,
    )


def view_stream(view_seed: int) -> np.random.Generator:
    return philox(view_seed, LOOK_VIEW_STREAM)


def _amplitudes(roughness: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per part id: (fold, weave, grain) amplitudes, as lookup tables over the label map."""
    size = max(int(p) for p in Part) + 1
    fold, weave, grain = np.zeros(size, np.float32), np.zeros(size, np.float32), np.zeros(size, np.float32)
    for part in (Part.UPPER, Part.SLEEVE, Part.LOWER, Part.HEADWEAR, Part.BAG):
        fold[part], weave[part], grain[part] = 0.11 * roughness, 0.05 * roughness, 0.03
    grain[Part.BACKGROUND] = 0.025
    grain[Part.SKIN], grain[Part.HAIR] = 0.02, 0.07
    fold[Part.SHOE], grain[Part.SHOE] = 0.05, 0.03
    grain[Part.ACCESSORY] = grain[Part.CARRIED] = 0.03
    return fold, weave, grain


@lru_cache(maxsize=16)
def _weave(height: int, width: int, period: int, diagonal: int) -> np.ndarray:
    yy, xx = np.indices((height, width), dtype=np.float32)
    return np.cos(2 * np.pi * (xx + diagonal * yy) / period).astype(np.float32)


def _smooth_field(
    rng: np.random.Generator, height: int, width: int, cell_y: float, cell_x: float
) -> np.ndarray:
    """Unit-variance noise that varies over about cell_y x cell_x pixels (bicubic upsampling of a grid)."""
    rows, cols = int(np.ceil(height / cell_y)) + 2, int(np.ceil(width / cell_x)) + 2
    coarse = Image.fromarray(rng.standard_normal((rows, cols), dtype=np.float32), "F")
    field = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
    return field / max(float(field.std()), 1e-6)


def texture(
    image: Image.Image, labels: np.ndarray, cloth: Fabric, u: float, rng: np.random.Generator
) -> Image.Image:
    """Cloth, grain and surface variation, as one brightness factor per pixel (all channels alike)."""
    height, width = labels.shape
    fold_amp, weave_amp, grain_amp = _amplitudes(cloth.roughness)
    # Folds hang: long vertically, narrow across (0.8 x 0.2 head units).
    folds = _smooth_field(rng, height, width, cell_y=max(2.0, 0.8 * u), cell_x=max(2.0, 0.2 * u))
    grain = rng.standard_normal((height, width), dtype=np.float32)
    # The backdrop's surfaces: isotropic blotches (dirt, wear, uneven light), not hanging folds.
    surface = _smooth_field(rng, height, width, cell_y=max(2.0, 0.5 * u), cell_x=max(2.0, 0.5 * u))
    factor = 1.0 + fold_amp[labels] * folds + grain_amp[labels] * grain
    factor += np.where(labels == Part.BACKGROUND, np.float32(SURFACE), np.float32(0.0)) * surface
    factor += weave_amp[labels] * _weave(height, width, cloth.period, cloth.diagonal)
    arr = np.asarray(image, dtype=np.float32) * factor[..., None]
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


@lru_cache(maxsize=1)
def _response_lut() -> list[int]:
    """White balance, then a filmic S-curve (contrast in the mid-tones, soft toe and shoulder)."""
    x = np.arange(256, dtype=np.float64)[None, :] / 255.0
    y = np.clip(x * np.asarray(WHITE_BALANCE)[:, None], 0.0, 1.0)
    y = 0.55 * y + 0.45 * y * y * (3.0 - 2.0 * y)
    return (y * 255.0 + 0.5).astype(np.uint8).reshape(-1).tolist()


@lru_cache(maxsize=8)
def _vignette(height: int, width: int) -> np.ndarray:
    yy, xx = np.indices((height, width), dtype=np.float32)
    r2 = ((yy + 0.5) / height - 0.5) ** 2 * 2 + ((xx + 0.5) / width - 0.5) ** 2 * 2  # 1 in the corners
    return (1.0 - VIGNETTE * r2)[..., None].astype(np.float32)


def develop(image: Image.Image) -> Image.Image:
    """The photo look's colour response: white balance and tone curve, saturation, vignetting."""
    image = ImageEnhance.Color(image.point(_response_lut())).enhance(SATURATION)
    arr = np.asarray(image, dtype=np.float32) * _vignette(image.height, image.width)
    return Image.fromarray((arr + 0.5).astype(np.uint8), "RGB")


def sensor(image: Image.Image, rng: np.random.Generator, noise_gain: float) -> Image.Image:
    """Sharpening, chroma noise (per channel, at half resolution) with a little luminance noise, JPEG."""
    width, height = image.size
    image = image.filter(ImageFilter.UnsharpMask(radius=1.2, percent=90, threshold=1))
    chroma = rng.standard_normal(((height + 1) // 2, (width + 1) // 2, 3), dtype=np.float32)
    chroma = chroma * (CHROMA_NOISE * noise_gain) + 128.0
    noise = Image.fromarray(np.clip(chroma + 0.5, 0, 255).astype(np.uint8), "RGB").resize(
        (width, height), Image.BILINEAR
    )
    luma = rng.standard_normal((height, width), dtype=np.float32)[..., None] * (LUMA_NOISE * noise_gain)
    noise = Image.fromarray(
        np.clip(np.asarray(noise, np.float32) + luma + 0.5, 0, 255).astype(np.uint8), "RGB"
    )
    image = ImageChops.add(image, noise, scale=1.0, offset=-128)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=2)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
