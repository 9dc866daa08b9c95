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

from dppp.errors import DataError
from trainer.config import AugmentConfig

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


def normalise(array: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 [3, H, W], CLIP-normalised (one conversion pass, then in place)."""
    pixels = torch.from_numpy(np.ascontiguousarray(array))  # a flip leaves negative strides torch refuses
    out = torch.empty((3, pixels.shape[0], pixels.shape[1]), dtype=torch.float32)
    out.copy_(pixels.permute(2, 0, 1))
    return out.mul_(_SCALE).sub_(_SHIFT)


class EvalTransform:
    """Decode, resize to (height, width), normalise: the deterministic path (identity bank, evaluation)."""

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
        return np.array(image, dtype=np.uint8)  # writable: torch.from_numpy warns on read-only arrays

    def __call__(self, data: bytes | Image.Image, rng: np.random.Generator | None = None,
                 where: str = "image") -> torch.Tensor:  # fmt: skip
        image = self.decode(data, where)
        return normalise(self.resize(image))


class ReidAugment(EvalTransform):
    """The training transform: resize, horizontal flip, pad + random crop, normalise, random erasing."""

    def __init__(self, config: AugmentConfig, size: tuple[int, int]):
        super().__init__(size)
        self.config = config

    def __call__(self, data, rng=None, where="image"):
        if not self.config.enabled:
            return super().__call__(data, rng, where)
        if rng is None:
            raise ValueError("ReidAugment needs a numpy Generator (the loader seeds one per batch)")
        cfg = self.config
        array = self.resize(self.decode(data, where))
        if rng.random() < cfg.flip_p:
            array = array[:, ::-1]
        if cfg.pad:
            height, width = self.size
            padded = np.zeros((height + 2 * cfg.pad, width + 2 * cfg.pad, 3), dtype=np.uint8)
            padded[cfg.pad : cfg.pad + height, cfg.pad : cfg.pad + width] = array
            top, left = rng.integers(0, 2 * cfg.pad + 1, size=2)
            array = padded[top : top + height, left : left + width]
        tensor = normalise(array)
        if rng.random() < cfg.erase_p:
            random_erase(tensor, rng, cfg.erase_area, cfg.erase_aspect)
        return tensor


def random_erase(tensor: torch.Tensor, rng: np.random.Generator, area: tuple[float, float],
                 aspect: float, attempts: int = 10) -> bool:  # fmt: skip
    """Zero one random rectangle of a normalised [3, H, W] tensor in place (Zhong et al. 2020).

    Zero after normalisation is CLIP's mean colour, the value Re-ID toolkits erase with. Returns whether
    a rectangle fitted within `attempts` draws."""
    _, height, width = tensor.shape
    for _ in range(attempts):
        target = rng.uniform(*area) * height * width
        ratio = float(np.exp(rng.uniform(np.log(aspect), -np.log(aspect))))
        h = int(round(np.sqrt(target * ratio)))
        w = int(round(np.sqrt(target / ratio)))
        if 0 < h < height and 0 < w < width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            tensor[:, top : top + h, left : left + w] = 0.0
            return True
    return False
