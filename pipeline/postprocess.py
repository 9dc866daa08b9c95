"""Post-processing shared by all renderers: resize to the Re-ID output size, encode for the shard.

Every renderer hands back a PIL image at its own size; `finish` turns it into the bytes of the sample's
image member. Encoding is deterministic: fixed encoder options, no metadata (no EXIF, no timestamps), so
the same pixels always give the same bytes and shards stay byte-identical across runs.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dppp.foundation.schema import StrictModel

if TYPE_CHECKING:
    from PIL import Image

# PIL is imported inside the functions that use it: loading the config imports this module (OutputConfig), and
# that must not pay for PIL.


class OutputConfig(StrictModel):
    height: int = Field(256, ge=8, le=4096)  # Re-ID convention: 256 x 128 (height x width)
    width: int = Field(128, ge=8, le=4096)
    format: Literal["jpg", "png", "webp"] = "jpg"
    quality: int = Field(90, ge=1, le=100)  # jpg / webp; png is lossless and ignores it
    # stretch: plain resize (Re-ID crops are stretched to 256x128 anyway);
    # crop: centre-crop to the output aspect ratio first, so a renderer's square image is not squashed.
    fit: Literal["stretch", "crop"] = "stretch"


def extension(output: OutputConfig) -> str:
    """The WebDataset member extension of an encoded image, e.g. "jpg" (the sample's `jpg` member)."""
    return output.format


def resize(image: Image.Image, output: OutputConfig) -> Image.Image:
    """RGB image at exactly output.height x output.width (returns the input when it already fits)."""
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    if output.fit == "crop":
        image = _crop_to_aspect(image, output.width / output.height)
    if image.size == (output.width, output.height):
        return image
    # LANCZOS on the way down keeps fine detail (the identity cues) without aliasing;
    # BICUBIC on the way up avoids LANCZOS's ringing on flat garment colours.
    shrinking = image.width >= output.width and image.height >= output.height
    method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    return image.resize((output.width, output.height), method)


def encode(image: Image.Image, output: OutputConfig) -> bytes:
    """Encode an RGB image in the configured format with fixed options (same pixels -> same bytes)."""
    buffer = io.BytesIO()
    if output.format == "jpg":
        # 4:2:0 subsampling and baseline (non-progressive, non-optimised) coding spelled out, so a Pillow
        # default change cannot silently change the bytes.
        image.save(
            buffer, format="JPEG", quality=output.quality, subsampling=2, optimize=False, progressive=False
        )
    elif output.format == "png":
        # Level 1: on noisy 256x128 renders it compresses as well as level 6 (within 1%) at 1/4 the time.
        image.save(buffer, format="PNG", compress_level=1, optimize=False)
    else:
        lossless = output.quality == 100
        image.save(buffer, format="WEBP", quality=output.quality, method=4, lossless=lossless, exact=False)
    return buffer.getvalue()


def finish(image: Image.Image, output: OutputConfig) -> bytes:
    """Resize a rendered image to the Re-ID output size and encode it: the bytes of the image member."""
    return encode(resize(image, output), output)


def _crop_to_aspect(image: Image.Image, aspect: float) -> Image.Image:
    """Centre crop to width / height == aspect (to the nearest pixel)."""
    width, height = image.size
    if abs(width / height - aspect) * height < 1:
        return image
    if width / height > aspect:
        new_width = max(1, round(height * aspect))
        left = (width - new_width) // 2
        return image.crop((left, 0, left + new_width, height))
    new_height = max(1, round(width / aspect))
    top = (height - new_height) // 2
    return image.crop((0, top, width, top + new_height))
