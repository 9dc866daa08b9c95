"""How long a diffusers plan takes to render, from rates measured on real hardware (`dppp generate
--dry-run`; pipeline/capacity.py asks each renderer kind for its estimate).

Only measured figures are used, each naming the card and the setting it was measured with
(docs/benchmarks.md has the runs). A diffusers rate is measured for one architecture at one size and step
count; a plan with another size or step count is scaled by FLOPs per image, counted with
torch.utils.flop_counter on the SD1.5-shaped build (benchmarks/bench_diffusers.py): UNet forwards grow
with steps and pixels (x2 with classifier-free guidance), the VAE decode with pixels. That assumes the
card keeps the same efficiency at the new size; it is an estimate, and says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dppp.pipeline.renderer import RenderEstimate
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig

# SD 1.5 architecture at 512x256 (64x32 latents), counted on the SD1.5-shaped build (H200 run, 2026-11-26).
SD15_UNET_GFLOP = 372.5  # one UNet forward, one image
SD15_DECODE_GFLOP = 1248.7  # one VAE decode, one image
SD15_TEXT_GFLOP = 13.3  # one prompt through the text encoder
SD15_PIXELS = 512 * 256
SD15_BLOCKS = [320, 640, 1280, 1280]


@dataclass(frozen=True)
class MeasuredRate:
    card: str
    compiled: bool
    setting: str
    images_per_s: float  # at 512x256, 25 steps, guidance 7.5 (classifier-free guidance on)
    source: str


# benchmarks/results/diffusers_h200_sweep.json (bench_diffusers.py via benchmarks/gpu_check.sh), bf16, SDPA.
_SWEEP = "benchmarks/results/diffusers_h200_sweep.json"
SD15_RATES = (
    MeasuredRate("NVIDIA H200", True, "bf16, SDPA, torch.compile + channels_last, batch 64", 20.81, _SWEEP),
    MeasuredRate("NVIDIA H200", False, "bf16, SDPA, eager, batch 32", 13.17, _SWEEP),
)


def sd15_flops_per_image(height: int, width: int, steps: int, guided: bool) -> float:
    scale = height * width / SD15_PIXELS
    prompts = 2 if guided else 1  # classifier-free guidance runs every forward on two prompts
    unet = steps * prompts * SD15_UNET_GFLOP * scale
    return (unet + SD15_DECODE_GFLOP * scale + SD15_TEXT_GFLOP * prompts) * 1e9


def is_sd15_architecture(model: str) -> bool:
    """SD 1.x by its UNet config where the folder is local, else by a hub id that names SD 1.x."""
    config = Path(model).expanduser() / "unet" / "config.json"
    if config.is_file():
        unet: dict[str, Any] = json.loads(config.read_text())
        return unet.get("block_out_channels") == SD15_BLOCKS and unet.get("cross_attention_dim") == 768
    return bool(re.search(r"stable-diffusion-v1|sd-?1[.-]?5", model, re.IGNORECASE))


def estimate_diffusers_hours(renderer: DiffusersRendererConfig, images: int) -> RenderEstimate | None:
    """GPU-hours for `images` with this config; None for an architecture nothing was measured on."""
    if not is_sd15_architecture(renderer.model):
        return None
    rate = next(r for r in SD15_RATES if r.compiled == renderer.compile)
    guided = renderer.guidance > 1
    reference = sd15_flops_per_image(512, 256, 25, True)
    scaled = (
        rate.images_per_s
        * reference
        / sd15_flops_per_image(renderer.height, renderer.width, renderer.steps, guided)
    )
    basis = (
        f"{scaled:.1f} images/s per GPU: measured {rate.images_per_s} images/s on one {rate.card} for the SD 1.5 "
        f"architecture at 512x256, 25 steps, guidance 7.5 ({rate.setting}; {rate.source}), scaled by FLOPs "
        f"to {renderer.height}x{renderer.width}, {renderer.steps} steps"
    )
    if renderer.compile:
        basis += "; plus about a minute of compile warm-up per worker"
    return RenderEstimate(images / scaled / 3600, "GPU", basis)
