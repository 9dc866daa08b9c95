"""Re-ID image transforms (decode, resize, flip, pad + random crop, random erasing, CLIP normalisation).

torchvision is not a dependency, so the few transforms Re-ID training needs are written here with PIL and
numpy. Every random choice comes from a `numpy.random.Generator` the caller passes in: the loader seeds
one per batch from (seed, epoch, rank, worker, batch), so a batch's pixels never depend on timing, worker
count or on a resume point.

    augment = ReidAugment(AugmentConfig(), (256, 128))
    x = augment(jpeg_bytes, rng)        # float32 tensor [3, 256, 128], CLIP-normalised
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from dppp.foundation.errors import DataError
from dppp.trainer.data.config import AugmentConfig

# CLIP's pixel normalisation (the image encoder was trained with it).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def decode_rgb(data: bytes, where: str = "image", size: tuple[int, int] | None = None) -> Image.Image:
    """Encoded image bytes -> PIL RGB. A damaged image is a DataError naming it.

    With `size` (height, width), a JPEG is decoded by libjpeg's DCT scaling at the smallest of 1/1, 1/2,
    1/4, 1/8 that still covers it: a 256x128 shard image for a 128x64 model decodes about 3x faster."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if size is not None:
                image.draft("RGB", (size[1], size[0]))
            return image.convert("RGB")
    except Exception as exc:
        raise DataError(f"{where}: cannot decode image: {type(exc).__name__}: {exc}") from None


# As one multiply-subtract per channel on the CHW tensor: x / 255 - mean) / std = x * scale - shift.
_SCALE = torch.from_numpy(1.0 / (255.0 * CLIP_STD)).view(3, 1, 1)
_SHIFT = torch.from_numpy(CLIP_MEAN / CLIP_STD).view(3, 1, 1)

Rect = tuple[int, int, int, int]  # top, left, height, width of a random-erasing rectangle


def normalise(array: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 [3, H, W], CLIP-normalised (one conversion pass, then in place)."""
    return normalise_batch(np.ascontiguousarray(array)[None])[0]


def normalise_batch(pixels: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], CLIP-normalised: one conversion pass over the whole
    batch, then two in-place ops (per image, the same arithmetic in the same order: bit-identical to
    `normalise`). `out`: where to write it (e.g. a tensor already in shared memory)."""
    source = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    if out is None:
        out = torch.empty(source.shape, dtype=torch.float32)
    out.copy_(source)
    return out.mul_(_SCALE).sub_(_SHIFT)


class EvalTransform:
    """Decode, resize to (height, width), normalise: the deterministic path (identity bank, evaluation).

    `pixels_into` is the uint8 half of the work, written into a slot of a batch array so that a loader
    normalises a whole batch in one op; calling the transform does both for one image."""

    def __init__(self, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def decode(self, data, where: str) -> Image.Image:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return decode_rgb(bytes(data), where, self.size)
        return data

    def resize(self, image: Image.Image) -> np.ndarray:
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)  # read-only view: copied once, into the batch slot

    def pixels_into(
        self, out: np.ndarray, data, rng: np.random.Generator | None = None, where: str = "image"
    ) -> Rect | None:
        """Write the image's uint8 HxWx3 pixels into `out`; returns the rectangle to erase after
        normalisation (never one here)."""
        out[...] = self.resize(self.decode(data, where))
        return None

    def __call__(
        self, data: bytes | Image.Image, rng: np.random.Generator | None = None, where: str = "image"
    ) -> torch.Tensor:
        pixels = np.empty((*self.size, 3), dtype=np.uint8)
        rect = self.pixels_into(pixels, data, rng, where)
        tensor = normalise(pixels)
        if rect is not None:
            erase(tensor, rect)
        return tensor


class ReidAugment(EvalTransform):
    """The training transform: resize, horizontal flip, pad + random crop, normalise, random erasing.

    The random draws, in this order, per image: flip, crop offsets, erase-or-not, erase rectangle; the
    rectangle is drawn before normalisation and applied after it, so a batch path and the one-image path
    draw the same numbers and give the same pixels."""

    def __init__(self, config: AugmentConfig, size: tuple[int, int]):
        super().__init__(size)
        self.config = config

    def pixels_into(self, out, data, rng=None, where="image"):
        if not self.config.enabled:
            return super().pixels_into(out, data, rng, where)
        if rng is None:
            raise ValueError("ReidAugment needs a numpy Generator (the loader seeds one per batch)")
        cfg = self.config
        array = self.resize(self.decode(data, where))
        if rng.random() < cfg.flip_p:
            array = array[:, ::-1]
        if cfg.pad:
            top, left = rng.integers(0, 2 * cfg.pad + 1, size=2)
            crop_padded(array, out, int(top) - cfg.pad, int(left) - cfg.pad)
        else:
            out[...] = array
        if rng.random() < cfg.erase_p:
            return erase_rect(out.shape[:2], rng, cfg.erase_area, cfg.erase_aspect)
        return None


def crop_padded(array: np.ndarray, out: np.ndarray, dy: int, dx: int) -> None:
    """out = the window at offset (dy, dx) of `array` zero-padded on every side, without building the
    padded image: pixel (y, x) of out is array[y + dy, x + dx], or black outside the array."""
    height, width = out.shape[:2]
    y0, y1 = max(0, -dy), min(height, array.shape[0] - dy)
    x0, x1 = max(0, -dx), min(width, array.shape[1] - dx)
    if y0 or x0 or y1 < height or x1 < width:
        out[...] = 0
    out[y0:y1, x0:x1] = array[y0 + dy : y1 + dy, x0 + dx : x1 + dx]


def erase_rect(
    shape: tuple[int, int],
    rng: np.random.Generator,
    area: tuple[float, float],
    aspect: float,
    attempts: int = 10,
) -> Rect | None:
    """A random-erasing rectangle (Zhong et al. 2020) inside an image of `shape` (height, width), or
    None when none fitted within `attempts` draws."""
    height, width = shape
    for _ in range(attempts):
        target = rng.uniform(*area) * height * width
        ratio = float(np.exp(rng.uniform(np.log(aspect), -np.log(aspect))))
        h = int(round(np.sqrt(target * ratio)))
        w = int(round(np.sqrt(target / ratio)))
        if 0 < h < height and 0 < w < width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return None


def erase(tensor: torch.Tensor, rect: Rect) -> None:
    """Zero the rectangle of a normalised [3, H, W] tensor in place: zero after normalisation is CLIP's
    mean colour, the value Re-ID toolkits erase with."""
    top, left, h, w = rect
    tensor[:, top : top + h, left : left + w] = 0.0
