"""The model `dppp pretrain` trains: a tiny CLIP, both towers, on (image, prompt) pairs of dppp shards.

Loss: CLIP's symmetric InfoNCE (Radford et al. 2021) over the batch, with CLIP's learnable temperature
(logit scale exp(t), clamped at `max_logit_scale`):

    L = 1/2 [ CE(s * V T^T, I) + CE(s * T V^T, I) ],   V, T the normalised image and text features [B, d]

It drives the same training loop as PDM (trainer/training/loop.py): `phases`, `set_phase`,
`trainable_parameters`, `loss(batch)`. What it adds for that:

- the text side reads `batch["texts"]` (each sample's prompt, its `txt` member), tokenized with the
  whole-word tiny tokenizer (prompts/tiny_tokenizer.py, `whole_words=True`: one token per taxonomy word,
  so a prompt fits CLIP's 77-token context) in the form `AutoTokenizer` loads it from the saved folder,
  the form every later user of the folder gets;
- the vision tower trains at the Re-ID size (e.g. 128x64) but keeps CLIP's square position grid as its
  parameter: every forward interpolates it to the Re-ID grid with the very function
  (`interpolate_position_embeddings`) that `train.model.backbone` applies once at load. The saved square
  grid therefore gives back exactly the embeddings it was trained with;
- `save_pretrained(folder)`: a plain transformers CLIP folder (config.json, model.safetensors, tokenizer
  files) that `train.model.backbone` and `--backbone` load like any CLIP.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoTokenizer, CLIPModel

from dppp.foundation.errors import DataError
from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer
from dppp.trainer.clip.backbone import interpolate_position_embeddings
from dppp.trainer.clip.tiny_clip import tiny_clip_config
from dppp.trainer.methods import losses
from dppp.trainer.pretraining.config import PRETRAIN_METHOD, PretrainModelConfig


class SquareGridPositions(nn.Module):
    """CLIP's patch + class + position embeddings, the square position grid interpolated each forward."""

    def __init__(self, original: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.original = original
        self.grid = grid

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        embeddings = self.original
        patch = embeddings.patch_size
        if tuple(pixel_values.shape[-2:]) != (self.grid[0] * patch, self.grid[1] * patch):
            raise ValueError(
                f"images are {tuple(pixel_values.shape[-2:])}, this model trains at "
                f"{self.grid[0] * patch}x{self.grid[1] * patch}"
            )
        patches = embeddings.patch_embedding(pixel_values.to(embeddings.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        cls = embeddings.class_embedding.expand(pixel_values.shape[0], 1, -1)
        positions = interpolate_position_embeddings(embeddings.position_embedding.weight, self.grid)
        return torch.cat([cls, patches], dim=1) + positions


def pretrain_tokenizer(max_length: int):
    """The whole-word tiny CLIP tokenizer as AutoTokenizer loads it from a saved folder."""
    built = build_tiny_clip_tokenizer(model_max_length=max_length, whole_words=True)
    with tempfile.TemporaryDirectory() as folder:
        built.save_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder)


class ClipPretrainModel(nn.Module):
    method = PRETRAIN_METHOD
    phases = (1,)
    num_classes = 0
    style_vocab: dict[str, int] = {}
    monitored = ("logit_scale",)  # parts of loss() that are logged as figures, not summed as losses

    def __init__(self, config: PretrainModelConfig):
        super().__init__()

        self.config = config
        arch = config.architecture
        self.tokenizer = pretrain_tokenizer(arch.max_text_length)
        clip_config = tiny_clip_config(
            arch,
            self.tokenizer,
            config.image_size[0],
            logit_scale_init_value=math.log(1 / config.init_temperature),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.clip = CLIPModel(clip_config)
        grid = (config.image_size[0] // arch.patch_size, config.image_size[1] // arch.patch_size)
        self.clip.vision_model.embeddings = SquareGridPositions(self.clip.vision_model.embeddings, grid)
        self.phase = 1

    # ---- what the training loop drives ---------------------------------------------------------------

    def set_phase(self, phase: int) -> None:
        if phase not in self.phases:
            raise ValueError(f"pretraining has phases {list(self.phases)}, not {phase}")
        for param in self.parameters():
            param.requires_grad_(True)
        self.phase = phase

    def prepare_phase(self, phase: int, run) -> None:
        """Nothing to do between phases (there is one)."""

    def batch_style_attributes(self, phase: int) -> tuple[str, ...]:
        return ()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight decay on matrices only (CLIP's and GPT's practice), not on biases,
        norms, embeddings and the temperature."""
        decay, plain = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.dim() < 2 or "embedding" in name or name.endswith("logit_scale")
            (plain if no_decay else decay).append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]

    def tokenize(self, texts: list[str], device) -> torch.Tensor:
        ids = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )["input_ids"]
        return ids.to(device)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.clip.vision_model(pixel_values=pixel_values).pooler_output
        return self.clip.visual_projection(pooled)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Pooled at the first end-of-text token (padding is end-of-text too), as dppp.trainer.clip.backbone does."""
        hidden = self.clip.text_model(input_ids=input_ids).last_hidden_state
        eos = (input_ids == self.tokenizer.eos_token_id).int().argmax(dim=-1)
        return self.clip.text_projection(hidden[torch.arange(hidden.shape[0], device=hidden.device), eos])

    def loss(self, batch: Mapping[str, object]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CLIP's loss on (image, prompt) pairs, plus `appearance_weight` x the same loss on (image,
        appearance caption) pairs when the batch has `captions`."""
        texts = batch.get("texts")
        if not texts:
            raise DataError("image-text pretraining got a batch without prompts")
        pixel_values = batch["pixel_values"]
        image = F.normalize(self.encode_image(pixel_values), dim=-1)
        scale = self.clip.logit_scale.exp().clamp(max=self.config.max_logit_scale)
        parts = {"clip": self.contrastive(image, texts, scale)}
        captions = batch.get("captions")
        if captions and self.config.appearance_weight > 0:
            # Views of one person share their caption: every one of them is a positive of it (and of each
            # other's copy of it), as in supervised contrastive learning; with one view a person it is InfoNCE.
            text = F.normalize(self.encode_text(self.tokenize(captions, image.device)), dim=-1)
            parts["appearance"] = losses.symmetric_supervised_contrastive(
                image, text, batch["pids"], 1 / scale
            )
        total = parts["clip"] + self.config.appearance_weight * parts.get("appearance", 0)
        return total, {**{k: v.detach() for k, v in parts.items()}, "logit_scale": scale.detach()}

    def contrastive(self, image: torch.Tensor, texts, scale: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between normalised image features and the features of `texts` (row i: image i)."""
        text = F.normalize(self.encode_text(self.tokenize(texts, image.device)), dim=-1)
        logits = scale * image @ text.t()
        target = torch.arange(len(image), device=image.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    # ---- the result ----------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> Path:
        """A plain transformers CLIP folder: config.json, model.safetensors and the tokenizer files."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        wrapper = self.clip.vision_model.embeddings
        self.clip.vision_model.embeddings = (
            wrapper.original
        )  # CLIP's own module: its square grid is what we trained
        try:
            self.clip.save_pretrained(folder, safe_serialization=True)
        finally:
            self.clip.vision_model.embeddings = wrapper
        self.tokenizer.save_pretrained(folder)
        return folder
