"""Shared post-processing: exact output size, deterministic encodings, lossless formats round-trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from dppp.pipeline.postprocess import OutputConfig, encode, extension, finish, resize


def gradient_image(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=2)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def test_resize_gives_the_output_size_and_keeps_a_fitting_image():
    out = OutputConfig(height=256, width=128)
    big = resize(gradient_image(256, 512), out)
    small = resize(gradient_image(32, 64), out)
    assert big.size == (128, 256) and small.size == (128, 256)
    fitting = gradient_image(128, 256)
    assert resize(fitting, out) is fitting


def test_resize_converts_any_mode_to_rgb():
    rgba = Image.new("RGBA", (64, 128), (10, 20, 30, 128))
    grey = Image.new("L", (64, 128), 99)
    out = OutputConfig(height=128, width=64)
    assert resize(rgba, out).mode == "RGB" and resize(grey, out).getpixel((3, 3)) == (99, 99, 99)


def test_crop_fit_centre_crops_instead_of_squashing():
    # A square image: a red band at the left and right quarters, blue in the middle half.
    arr = np.zeros((200, 200, 3), np.uint8)
    arr[:, :50] = arr[:, 150:] = (255, 0, 0)
    arr[:, 50:150] = (0, 0, 255)
    image = Image.fromarray(arr, "RGB")
    cropped = np.asarray(resize(image, OutputConfig(height=200, width=100, fit="crop")))
    stretched = np.asarray(resize(image, OutputConfig(height=200, width=100)))
    assert cropped.shape == stretched.shape == (200, 100, 3)
    assert cropped[..., 0].max() < 10  # the side bands were cropped away
    assert stretched[:, 2, 0].min() > 200  # stretching keeps them, squashed


@pytest.mark.parametrize("fmt,magic", [("jpg", b"\xff\xd8\xff"), ("png", b"\x89PNG"), ("webp", b"RIFF")])
def test_encode_is_deterministic_and_decodes_to_the_output_size(fmt, magic):
    out = OutputConfig(height=64, width=32, format=fmt, quality=80)
    image = gradient_image(50, 100)
    data = finish(image, out)
    assert data == finish(image, out)
    assert data.startswith(magic)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.size == (32, 64) and decoded.mode == "RGB"
    assert extension(out) == fmt


def test_lossless_formats_round_trip_exactly():
    image = gradient_image(128, 256)
    for out in (OutputConfig(format="png"), OutputConfig(format="webp", quality=100)):
        decoded = Image.open(io.BytesIO(encode(image, out))).convert("RGB")
        assert decoded.tobytes() == image.tobytes(), out.format


def test_jpeg_quality_trades_bytes_for_fidelity():
    image = gradient_image(128, 256)
    low = encode(image, OutputConfig(quality=20))
    high = encode(image, OutputConfig(quality=95))
    assert len(low) < len(high)

    def error(data: bytes) -> float:
        decoded = np.asarray(Image.open(io.BytesIO(data)), np.float32)
        return float(np.abs(decoded - np.asarray(image, np.float32)).mean())

    assert error(high) < error(low)
    assert b"Exif" not in high  # no metadata: bytes depend on pixels only


def test_output_config_rejects_bad_values():
    for bad in ({"quality": 0}, {"quality": 101}, {"height": 0}, {"format": "gif"}, {"size": 3}):
        with pytest.raises(ValidationError):
            OutputConfig(**bad)
