"""CLIP ViT-B/16's exact architecture with random weights and a CLIP tokenizer, built offline.

GPU cost does not depend on weight values, so this folder trains at the cost of `openai/clip-vit-base-
patch16` (the backbone of configs/geneperson.yaml: a 12-layer, 768-wide ViT with 16x16 patches at 224x224,
a 12-layer, 512-wide text transformer over CLIP's 49,408-token vocabulary and 77-token context, 512-wide
projections; 149.6 M parameters) while needing no download: `dppp models clip-vit-b16-shaped OUT`, then
`--set train.model.backbone=OUT`. It measures stage 2 at paper scale (benchmarks/bench_train_gpu.py) and
exercises the loading path of a real CLIP folder (`CLIPModel.from_pretrained`, `AutoTokenizer`).

The tokenizer is the offline word-list tokenizer (prompts/tiny_tokenizer.py) in whole-word mode, so a
prompt costs about one token per word as with CLIP's real vocabulary, padded with unused entries to CLIP's
49,408 tokens: the text model's embedding has CLIP's size and `check_backbone` finds the two agree. A
random model recognises nothing; its figures are costs, not accuracies.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from dppp.foundation.model_folder import check_destination, replacing_folder
from dppp.prompts.tiny_tokenizer import default_words, vocab_and_merges

VOCAB_SIZE, CONTEXT = 49408, 77
TEXT = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8}
VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
IMAGE_SIDE, PATCH, PROJECTION = 224, 16, 512
PARAMETERS = 149_620_737  # transformers' CLIPModel of this config (openai/clip-vit-base-patch16 has the same)


def clip_vit_b16_tokenizer():
    """A CLIPTokenizer of exactly 49,408 tokens: the taxonomy's words whole, then unused fillers."""
    vocab, merges = vocab_and_merges(default_words(), whole_words=True)
    for n in range(VOCAB_SIZE - len(vocab)):
        vocab[f"<|unused{n}|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT)
    if len(tokenizer) != VOCAB_SIZE:  # an added special token would shift it
        raise AssertionError(f"tokenizer has {len(tokenizer)} tokens, not {VOCAB_SIZE}")
    return tokenizer


def clip_vit_b16_config(tokenizer=None):
    """transformers' CLIPConfig of ViT-B/16 (the token ids from `tokenizer` when given)."""
    ids = {}
    if tokenizer is not None:
        ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    return CLIPConfig(
        text_config={**TEXT, "vocab_size": VOCAB_SIZE, "max_position_embeddings": CONTEXT, **ids},
        vision_config={**VISION, "image_size": IMAGE_SIDE, "patch_size": PATCH},
        projection_dim=PROJECTION,
    )


def build_clip_vit_b16_shaped(out_dir: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Save a random ViT-B/16 CLIP and its tokenizer to `out_dir` (save_pretrained, safetensors, fp32:
    about 600 MB), atomically: a temp folder renamed into place. Refuses a non-empty folder unless
    `overwrite`."""
    check_destination(out_dir, overwrite=overwrite)
    tokenizer = clip_vit_b16_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(clip_vit_b16_config(tokenizer))
    with replacing_folder(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)
