"""Blank and safety-filtered outputs of the diffusers renderer: which images carry no picture (nearly
uniform or nearly black, one PIL image or a batch of pixels on any device), and the deterministic seed of
each re-render. `bumped_seed` steps by an odd constant modulo 2**63, so every retry of a view gets a fresh
seed and the same view gets the same retries on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    pass

# Odd, so that seed + k * STEP (mod 2**63) never repeats for k < 2**63: every retry gets a fresh seed.
SEED_BUMP = 0x9E3779B97F4A7C15
SEED_MODULUS = 2**63


def bumped_seed(seed: int, attempt: int) -> int:
    """The seed of render attempt `attempt` (0 = first render, which uses the view's own seed)."""
    if attempt == 0:
        return seed
    return (seed + attempt * SEED_BUMP) % SEED_MODULUS


def is_blank(image, *, std_threshold: float, mean_threshold: float) -> bool:
    """True for an image that carries no picture: nearly uniform (any colour) or nearly black."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return bool(pixels.std() < std_threshold or pixels.mean() < mean_threshold)


def to_uint8_pixels(images):
    """The pipeline's [0, 1] NCHW images -> NHWC uint8, as diffusers' own PIL conversion computes them."""
    return (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def blank_flags(pixels, *, std_threshold: float, mean_threshold: float):
    """`is_blank` for a batch of NHWC uint8 pixels, on whatever device they are."""
    values = pixels.float() / 255.0
    std = values.std(dim=(1, 2, 3), correction=0)
    mean = values.mean(dim=(1, 2, 3))
    return (std < std_threshold) | (mean < mean_threshold)
