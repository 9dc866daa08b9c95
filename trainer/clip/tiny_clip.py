"""A tiny, randomly initialised CLIP built offline from a config: tests and the CPU default.

Same classes as a real run (transformers' CLIPModel and CLIPTokenizer), only small, so every code path
that real CLIP weights take (position-embedding interpolation, placeholder tokens, save_pretrained /
from_pretrained) is exercised without a download.
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel

from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer
from dppp.trainer.clip.config import TinyClipConfig


def build_tiny_clip(tiny: TinyClipConfig, image_side: int, seed: int = 0):
    """(CLIPModel, CLIPTokenizer). The vision tower is square (`image_side`), like every CLIP checkpoint;
    the backbone interpolates its position embeddings to the Re-ID grid afterwards."""
    tokenizer = build_tiny_clip_tokenizer(model_max_length=tiny.max_text_length)
    config = tiny_clip_config(tiny, tokenizer, image_side)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval(), tokenizer


def tiny_clip_config(tiny: TinyClipConfig, tokenizer, image_side: int, **extra):
    """transformers' CLIPConfig of a tiny CLIP: both towers `tiny`'s size, the text tower sized to
    `tokenizer`, a square vision tower of `image_side`; `extra` goes to CLIPConfig (e.g. the initial
    logit scale)."""
    common = dict(
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        projection_dim=tiny.projection_dim,
    )
    return CLIPConfig(
        text_config=dict(
            common,
            vocab_size=len(tokenizer),
            max_position_embeddings=tiny.max_text_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(common, image_size=image_side, patch_size=tiny.patch_size),
        projection_dim=tiny.projection_dim,
        **extra,
    )
