"""A tiny, randomly initialised Stable-Diffusion-class pipeline, built fully offline.

Tests, `configs/tiny-diffusion.yaml` and the CPU benchmark need a real diffusers text-to-image pipeline
without any download. This one has the architecture of Stable Diffusion 1.x (UNet2DConditionModel with
cross-attention, AutoencoderKL, CLIP text encoder and tokenizer, DDIM scheduler) at toy widths, so it
exercises exactly the code a real model does: it is saved with `save_pretrained` and loaded back through
`AutoPipelineForText2Image.from_pretrained`, the same path as a hub model. Its images are noise-like
patterns, not people: it checks plumbing and determinism, not quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from dppp.foundation.model_folder import check_destination
from dppp.pipeline.renderers.pipeline_folder import save_pipeline_folder
from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer

# Widths chosen so a batch of four 64x32 images with a few steps renders in well under a second on one
# CPU core, while keeping every block type a real SD UNet has (down/up, with and without cross-attention).
TEXT_HIDDEN = 32
UNET_CHANNELS = (32, 64)
VAE_CHANNELS = (32, 64)  # two levels: vae_scale_factor 2, so a 64x32 image has 32x16 latents
LATENT_CHANNELS = 4
# The offline tokenizer knows only the taxonomy's words and often splits one into a few pieces, where
# CLIP's 49k-word vocabulary has one token: the same prompt takes ~10-30% more tokens. A longer context
# than CLIP's 77 gives the tiny model room for the prompts a real model's 77 tokens hold
# (configs/tiny-diffusion.yaml sets generate.prompts.max_tokens to match).
TEXT_CONTEXT = 128


def _components(seed: int) -> dict:
    tokenizer = build_tiny_clip_tokenizer(model_max_length=TEXT_CONTEXT)
    # Each module is initialised from its own fixed seed, inside fork_rng so the caller's global RNG state
    # is left untouched: the same seed always gives byte-identical weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            block_out_channels=UNET_CHANNELS,
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
            up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
            block_out_channels=VAE_CHANNELS,
            latent_channels=LATENT_CHANNELS,
            layers_per_block=1,
            norm_num_groups=32,
            sample_size=64,
        )
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TEXT_HIDDEN,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                projection_dim=TEXT_HIDDEN,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_tiny_diffusion_pipeline(seed: int = 0):
    """The tiny StableDiffusionPipeline in memory (no safety checker, no feature extractor)."""
    return StableDiffusionPipeline(
        **_components(seed),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_diffusion(out_dir: str | Path, seed: int = 0, *, overwrite: bool = False) -> Path:
    """Build the tiny pipeline and `save_pretrained` it into `out_dir` atomically; returns the folder.

    An existing non-empty `out_dir` is refused unless `overwrite`.
    """
    check_destination(out_dir, overwrite=overwrite)
    return save_pipeline_folder(build_tiny_diffusion_pipeline(seed), out_dir, overwrite=overwrite)
