"""A pipeline with Stable Diffusion 1.5's exact architecture and random weights, built offline.

GPU throughput does not depend on weight values, so this pipeline costs what SD 1.5 costs (860 M-parameter
UNet2DConditionModel 320/640/1280/1280 with 2 layers per block and 768-wide cross-attention; the SD VAE
128/256/512/512; a 12-layer, 768-wide CLIP text encoder with CLIP's 49,408-token embedding and 77-token
context) while needing no download. It measures the renderer at paper scale (benchmarks/bench_diffusers.py,
benchmarks/gpu_check.sh) and exercises the loading path of a real model folder.

Random weights need two adjustments to keep sampling in a trained model's range. A random UNet cannot
predict the noise in its input, and a sampler fed unrelated noise predictions drifts: latents reach 20x
their start over 25 steps, half precision overflows and the decoder saturates to flat images, which the
renderer's blank check would re-render. So the scheduler is told the UNet predicts the clean latents
(`prediction_type="sample"`, the same arithmetic per step) and the UNet's output layer is rescaled to
unit standard deviation, the scale of SD's latents: sampling then stays bounded. The VAE decoder's output
layer is rescaled so decoded images have a standard deviation of about 0.5 in [-1, 1]. Both scales are
measured on a fixed probe at build time, so the same seed and scale give byte-identical weights.

`scale` < 1 shrinks every width (channels, text width) to that fraction, rounded to the group-norm
multiple, keeping every block of the architecture: tests build it small so CI stays fast. The tokenizer
is the offline word-list tokenizer (prompts/tiny_tokenizer.py) at CLIP's 77-token context; a real
SD 1.5 folder brings CLIP's own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from dppp.foundation.model_folder import check_destination
from dppp.pipeline.renderers.pipeline_folder import save_pipeline_folder
from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer

UNET_CHANNELS = (320, 640, 1280, 1280)
VAE_CHANNELS = (128, 256, 512, 512)
TEXT_WIDTH, TEXT_LAYERS, TEXT_FFN, TEXT_VOCAB, TEXT_CONTEXT = 768, 12, 3072, 49408, 77
GROUPS = 32  # group-norm groups: every width stays a multiple of this
UNET_OUTPUT_STD = 1.0  # SD latents (after the VAE's scaling factor) have unit standard deviation
IMAGE_STD = 0.5  # decoded images span [-1, 1] without saturating to flat colour


def _width(full: int, scale: float, multiple: int = GROUPS) -> int:
    return max(multiple, int(round(full * scale / multiple)) * multiple)


def unet_config(scale: float = 1.0) -> dict:
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "block_out_channels": tuple(_width(c, scale) for c in UNET_CHANNELS),
        "layers_per_block": 2,
        "cross_attention_dim": _width(TEXT_WIDTH, scale, 64),
        "attention_head_dim": 8,  # SD 1.5's config: 8 heads (diffusers' historical name for it)
        "norm_num_groups": GROUPS,
    }


def vae_config(scale: float = 1.0) -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": tuple(_width(c, scale) for c in VAE_CHANNELS),
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": GROUPS,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def text_config(tokenizer, scale: float = 1.0) -> dict:
    width = _width(TEXT_WIDTH, scale, 64)
    return {
        "vocab_size": TEXT_VOCAB,
        "hidden_size": width,
        "intermediate_size": _width(TEXT_FFN, scale, 64),
        "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": max(1, width // 64),
        "max_position_embeddings": TEXT_CONTEXT,
        "hidden_act": "quick_gelu",
        "projection_dim": width,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _components(seed: int, scale: float) -> dict:
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    tokenizer = build_tiny_clip_tokenizer(model_max_length=TEXT_CONTEXT)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left as it was
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config(scale))
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**vae_config(scale))
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(tokenizer, scale)))
        _calibrate(unet, vae, text_encoder, tokenizer)
    scheduler = DPMSolverMultistepScheduler(  # SD 1.5's noise schedule
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        prediction_type="sample",  # see the module docstring
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def _calibrate(unet, vae, text_encoder, tokenizer) -> None:
    """Rescale the UNet's and the decoder's output layers to the output scales of trained models."""
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(
        (1, 4, 16, 8), generator=generator
    )  # a small probe: the scales barely depend on size
    with torch.no_grad():
        ids = tokenizer(["a photo of a person"], padding="max_length", return_tensors="pt").input_ids
        context = text_encoder(ids)[0]
        eps = unet(latents, 999, encoder_hidden_states=context).sample
        _rescale(unet.conv_out, UNET_OUTPUT_STD / float(eps.std()))
        image = vae.decode(latents / vae.config.scaling_factor).sample
        _rescale(vae.decoder.conv_out, IMAGE_STD / float(image.std()))


def _rescale(layer, factor: float) -> None:
    # Rounded to 3 significant digits: the probe's sums vary in their last bits with the thread count,
    # and the same seed must give the same bytes on any machine.
    factor = float(f"{factor:.3g}")
    layer.weight.mul_(factor)
    if layer.bias is not None:
        layer.bias.mul_(factor)


def build_sd15_shaped_pipeline(seed: int = 0, scale: float = 1.0):
    """The SD1.5-shaped StableDiffusionPipeline in memory, fp32 (no safety checker)."""
    return StableDiffusionPipeline(
        **_components(seed, scale),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sd15_shaped(
    out_dir: str | Path, seed: int = 0, *, scale: float = 1.0, dtype: str = "fp32", overwrite: bool = False
) -> Path:
    """Build the pipeline and save it into `out_dir` (weights in `dtype`: fp16 halves a 4 GB folder)."""
    check_destination(out_dir, overwrite=overwrite)
    pipe = build_sd15_shaped_pipeline(seed, scale)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    pipe.to(dtype=torch_dtype)
    return save_pipeline_folder(pipe, out_dir, overwrite=overwrite)


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters per network: the proof that the shape is SD 1.5's (UNet 859.5 M at scale 1)."""
    return {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("unet", "vae", "text_encoder")
    }
