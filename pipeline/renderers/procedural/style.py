"""The view-level factors of the procedural renderer, applied as real image changes.

Identity lives in the figure; everything here is "style": how the same person looks under another light,
weather and camera. These factors shift colours and statistics enough to open a real domain gap between
cameras and lighting conditions (what PDM's style pseudo-word has to absorb), in this order:

1. shading: the figure's rounded modelling and part outlines, a ground shadow (these belong to the
   drawing and stay on with `lighting=0`), directional light (hard-edged for harsh light), backlighting;
2. illumination: colour temperature and brightness gains, then contrast and black-level lift;
3. weather: desaturation, rain streaks, fog veil, snowflakes;
4. camera: a per-camera white-balance cast and gamma, then resolution loss (distance and sensor), blur
   (optical or motion), sensor noise and compression blocks.

For speed, spatial factors are gathered into one brightness map and applied in a single float pass over
the figure's region; everything per-channel and pointwise (light colour, contrast, lift, camera curves) is
one lookup table; the rest runs in Pillow's C code.

All randomness comes from the view's generator, so the same view gives the same pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter

from dppp.pipeline.renderers.procedural.colours import stable_unit


@dataclass(frozen=True)
class Light:
    gain: tuple[float, float, float]  # colour temperature x brightness
    contrast: float
    shade: float  # strength of the directional shading across the figure
    hard: bool = False  # a hard shadow edge instead of a smooth ramp
    subject: float = 1.0  # backlighting: the subject darker than the scene
    lift: float = 0.0  # black-level lift toward the ambient colour (hazy, low light)
    shadow: float = 0.35  # ground shadow darkness
    noise: float = 1.0  # sensor noise multiplier (low light means high gain)


NEUTRAL = Light(gain=(1.0, 1.0, 1.0), contrast=1.0, shade=0.0, shadow=0.3)
LIGHTS = {
    "bright midday sun": Light((1.12, 1.1, 1.03), 1.18, 0.3, hard=True, shadow=0.5),
    "overcast daylight": Light((0.93, 0.96, 1.03), 0.82, 0.06, lift=0.05, shadow=0.15),
    "soft morning light": Light((1.06, 1.0, 0.92), 0.95, 0.2, shadow=0.3),
    "warm evening light": Light((1.15, 0.88, 0.62), 1.05, 0.3, shadow=0.4),
    "dusk": Light((0.62, 0.58, 0.74), 0.88, 0.12, lift=0.04, shadow=0.15, noise=1.4),
    "night under streetlights": Light((0.7, 0.52, 0.3), 1.15, 0.25, shadow=0.3, noise=1.6),
    "fluorescent indoor lighting": Light((0.96, 1.05, 1.0), 0.95, 0.05, shadow=0.2),
    "warm indoor lighting": Light((1.1, 0.95, 0.75), 0.95, 0.12, shadow=0.25),
    "dim indoor lighting": Light((0.62, 0.6, 0.58), 0.85, 0.1, lift=0.03, shadow=0.15, noise=1.5),
    "backlit": Light((1.0, 1.0, 1.03), 0.9, 0.1, subject=0.55, lift=0.04, shadow=0.2),
    "harsh shadows": Light((1.1, 1.05, 0.97), 1.35, 0.5, hard=True, shadow=0.6),
}


@dataclass(frozen=True)
class Quality:
    downscale: float  # resolution loss factor (1: none)
    blur: float  # box blur radius, pixels
    noise: float  # sensor noise standard deviation (0..1 scale)
    motion: int  # horizontal motion blur length, pixels
    jpeg: int | None  # quality of a harsh in-camera compression pass
    saturation: float = 1.0


QUALITY = {
    "sharp HD": Quality(1.0, 0.0, 0.01, 0, None),
    "low-resolution CCTV": Quality(2.6, 0.0, 0.02, 0, 35, 0.85),
    "grainy surveillance": Quality(1.7, 0.0, 0.04, 0, None, 0.75),
    "motion-blurred CCTV": Quality(1.5, 0.0, 0.02, 7, None, 0.9),
}
GENERIC_QUALITY = Quality(1.4, 0.3, 0.03, 0, None)
DISTANCE_LOSS = {"near": 1.0, "medium": 1.12, "far": 1.35}


@dataclass(frozen=True)
class Placement:
    """What the style stage needs to know about the figure: centre line, body half-width, feet."""

    cx: float
    half_width: float
    feet_y: float
    u: float


Region = tuple[slice, slice]


OUTLINE = 0.78  # part boundaries darkened to this: the drawn outline of an illustration


def shading(
    labels: np.ndarray,
    place: Placement,
    light: Light,
    light_side: int,
    strength: float,
    outline: float = OUTLINE,
) -> tuple[np.ndarray, Region]:
    """The brightness factor of every spatial lighting effect, built once so the image is multiplied a
    single time: the figure's roundness, sky light and outlines, the directional light (hard-edged for
    harsh light), backlighting, and the ground shadow. With strength 0 only the modelling (roundness,
    outlines, a soft shadow) remains: it is part of the drawing, not of the light.

    Returns the factor over the region where it is not 1 (the figure and its shadow, or the whole frame
    when backlighting brightens the scene) and that region, so the float pass touches only those pixels."""
    height, width = labels.shape
    s = strength
    scene = 1.0 + (1.0 / light.subject - 1.0) * 0.2 * s if (s > 0 and light.subject < 1) else 1.0
    shadow = light.shadow if s > 0 else NEUTRAL.shadow
    sx = place.cx - light_side * place.half_width * 0.6
    rx, ry = max(place.half_width * 1.5, 1.0), max(place.u * 0.28, 1.0)
    rows_any, cols_any = np.nonzero(labels.any(axis=1))[0], np.nonzero(labels.any(axis=0))[0]
    if scene != 1.0 or rows_any.size == 0:
        y0, y1, x0, x1 = 0, height, 0, width
    else:
        y0 = max(0, min(int(rows_any[0]), int(place.feet_y - ry)))
        y1 = min(height, max(int(rows_any[-1]) + 1, int(place.feet_y + ry) + 1))
        x0 = max(0, min(int(cols_any[0]), int(sx - rx)))
        x1 = min(width, max(int(cols_any[-1]) + 1, int(sx + rx) + 1))
    lab = labels[y0:y1, x0:x1]
    fig = lab > 0
    xs = (np.arange(x0, x1, dtype=np.float32) - place.cx) / max(place.half_width, 1.0)
    across = 1.0 - 0.13 * np.minimum(xs * xs, 1.5)
    if s > 0:
        lit = xs * light_side
        if light.hard:  # the far side of the body in shadow, behind a hard terminator
            directional = np.where(lit < -0.1, 1.0 - light.shade * s, 1.0 + 0.15 * light.shade * s)
        else:
            directional = 1.0 + light.shade * s * np.clip(lit, -1.0, 1.0) * 0.5
        across = across * directional * (1.0 + (light.subject - 1.0) * s)
    rows = np.linspace(1.04, 0.96, height, dtype=np.float32)[y0:y1, None]  # sky light: the top brighter
    figure = rows * across.astype(np.float32)[None, :]
    # Part boundaries (and the silhouette) darkened: an outline (an illustration's ink, or a soft contact
    # shadow in the photo look).
    edge = np.zeros_like(fig)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    figure[edge & fig] *= outline
    background = np.full(lab.shape, scene, dtype=np.float32)
    # The ground shadow: a soft ellipse at the feet, thrown away from the light.
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] - place.feet_y) / ry
    dx = (np.arange(x0, x1, dtype=np.float32)[None, :] - sx) / rx
    background *= 1.0 - np.clip(1.0 - (dx * dx + dy * dy), 0.0, 1.0) * shadow
    return np.where(fig, figure, background), (slice(y0, y1), slice(x0, x1))


def expose(image: Image.Image, factor: np.ndarray, region: Region) -> Image.Image:
    """Multiply the region by the shading factor (one float pass over those pixels only)."""
    arr = np.array(image)  # a writable copy
    part = arr[region].astype(np.float32)
    part *= factor[..., None]
    np.minimum(part, 255.0, out=part)  # factors are never negative: only the top needs clipping
    arr[region] = part.astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def tone(image: Image.Image, light: Light, camid: str, strength: float) -> Image.Image:
    """Per-channel tone curves as one lookup table: the light's colour (temperature x brightness),
    contrast and black-level lift, then the camera's own white balance and gamma (the same scene looks
    different on each camera)."""
    if strength <= 0:
        return image
    gain = 1.0 + (np.asarray(light.gain, dtype=np.float32)[:, None] - 1.0) * strength
    x = np.arange(256, dtype=np.float32)[None, :] * gain  # (3, 256): one curve per channel
    small = np.asarray(image)[::4, ::4].reshape(-1, 3)
    mean = small.mean(axis=0, dtype=np.float32)[:, None] * gain  # contrast pivots on the lit image's mean
    contrast = 1.0 + (light.contrast - 1.0) * strength
    y = (x - mean) * contrast + mean
    if light.lift:
        lift = light.lift * strength
        y = y * (1.0 - lift) + lift * gain * 150.0
    cam_gain, cam_gamma = _camera_curve(camid)
    cam_gain = 1.0 + (cam_gain - 1.0) * min(strength, 1.0)
    gamma = 1.0 + (cam_gamma - 1.0) * min(strength, 1.0)
    y = 255.0 * np.power(np.clip(y * cam_gain / 255.0, 0.0, 1.0), gamma)
    lut = (y + 0.5).astype(np.uint8).reshape(-1).tolist()
    return image.point(lut)


def weather(image: Image.Image, labels: np.ndarray, kind: str, rng: np.random.Generator) -> Image.Image:
    height, width = labels.shape
    if kind == "cloudy":
        return ImageEnhance.Brightness(ImageEnhance.Color(image).enhance(0.85)).enhance(0.95)
    if kind == "light rain":
        image = ImageEnhance.Brightness(ImageEnhance.Color(image).enhance(0.7)).enhance(0.86)
        streaks = _streaks(rng, width, height, count=28, length=0.08, slant=0.25, value=60)
        return Image.composite(Image.new("RGB", image.size, (225, 228, 235)), image, streaks)
    if kind == "fog":  # thicker on the far background than on the figure
        veil = Image.fromarray(np.where(labels > 0, 77, 128).astype(np.uint8), "L")
        return Image.composite(Image.new("RGB", image.size, (204, 207, 212)), image, veil)
    if kind == "snow":
        image = image.point([min(255, int(v * m + 10)) for m in (0.97, 1.0, 1.06) for v in range(256)])
        flakes = _streaks(rng, width, height, count=60, length=0.0, slant=0.0, value=230)
        return Image.composite(Image.new("RGB", image.size, (245, 245, 248)), image, flakes)
    return image  # clear, or a weather value this renderer does not know


def degrade(
    image: Image.Image,
    quality: Quality,
    distance: str,
    light: Light,
    rng: np.random.Generator,
    strength: float,
) -> Image.Image:
    """Resolution loss, blur, motion, sensor noise and compression, by the camera's profile."""
    width, height = image.size
    factor = quality.downscale * DISTANCE_LOSS.get(distance, 1.1)
    if factor > 1.05:
        small = (max(8, round(width / factor)), max(8, round(height / factor)))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    if quality.blur > 0:
        image = image.filter(ImageFilter.BoxBlur(quality.blur))  # 3x cheaper than Gaussian, same look here
    if quality.saturation < 1.0:
        image = ImageEnhance.Color(image).enhance(quality.saturation)
    if quality.motion > 1:
        arr = _motion_blur(np.asarray(image, dtype=np.float32), quality.motion)
        image = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    sigma = quality.noise * (1.0 + (light.noise - 1.0) * strength) * 255.0
    if sigma > 0:
        # Luminance noise, as on a sensor, all in Pillow's C code: random bytes scaled by a lookup table
        # to the wanted spread around 128, then added to every channel. Uniform bytes are far cheaper to
        # draw than normals and look the same at this amplitude (a uniform byte has std 73.9).
        noise = Image.frombytes("L", image.size, rng.bytes(width * height)).point(_noise_lut(round(sigma, 3)))
        image = ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)), scale=1.0, offset=-128)
    if quality.jpeg is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality.jpeg, subsampling=2)
        buffer.seek(0)
        image = Image.open(buffer).convert("RGB")
    return image


@lru_cache(maxsize=64)
def _noise_lut(sigma: float) -> list[int]:
    k = sigma / 73.9
    return [min(255, max(0, int(round((v - 127.5) * k + 128.0)))) for v in range(256)]


@lru_cache(maxsize=256)
def _camera_curve(camid: str) -> tuple[np.ndarray, float]:
    """The camera's fixed white-balance gains (3, 1) and gamma, from a stable hash of its id."""
    gain = np.array([[1.0 + 0.16 * (stable_unit(f"cam:{camid}:{c}") - 0.5)] for c in "rgb"], np.float32)
    return gain, 0.88 + 0.24 * stable_unit(f"cam:{camid}:gamma")


def _motion_blur(arr: np.ndarray, length: int) -> np.ndarray:
    """A horizontal box blur by cumulative sums: the smear of a walker crossing a slow shutter."""
    pad = length // 2
    padded = np.pad(arr, ((0, 0), (pad + 1, length - pad - 1), (0, 0)), mode="edge")
    cs = np.cumsum(padded, axis=1, dtype=np.float32)
    return (cs[:, length:] - cs[:, :-length]) / length


def _streaks(
    rng: np.random.Generator, width: int, height: int, count: int, length: float, slant: float, value: int
) -> Image.Image:
    """Rain streaks (length > 0) or snowflakes (length 0) as an L mask."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for x, y, size in rng.random((count, 3)):
        x0, y0 = x * width, y * height
        if length > 0:
            dy = length * height * (0.6 + 0.8 * size)
            draw.line((x0, y0, x0 + slant * dy, y0 + dy), fill=value, width=1)
        else:
            r = 0.6 + 1.4 * size
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=value)
    return mask
