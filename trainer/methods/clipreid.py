"""CLIP-ReID (Li et al., AAAI 2023): learned per-identity prompts, then the image encoder against them."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from dppp.trainer.methods import losses
from dppp.trainer.methods.config import ModelConfig
from dppp.trainer.methods.model import Batch, ReIDModel, batch_pids
from dppp.trainer.methods.text_prompts import compile_prompt, encode_prompt, placeholder_tokens


class ClipReID(ReIDModel):
    """CLIP-ReID (Li et al., AAAI 2023): phase 1 learns per-identity context tokens X1..Xn with both
    encoders frozen; phase 2 fine-tunes the image encoder against all identities' prompt features."""

    method = "clipreid"
    uses_identity_bank = True

    @classmethod
    def prompt_tokens(cls, config: ModelConfig) -> list[str]:
        return placeholder_tokens("X", config.clipreid_context_tokens)

    def __init__(self, config, num_classes, style_vocab, backbone):
        super().__init__(config, num_classes, style_vocab, backbone)
        n = config.clipreid_context_tokens
        self.prompt = compile_prompt(config.clipreid_template, backbone.tokenizer, {"X": n})
        self.prompt_context = nn.Parameter(torch.randn(num_classes, n, backbone.token_dim) * 0.02)

    def trains_in_phase(self, name: str, phase: int) -> bool:
        if phase == 1:
            return name == "prompt_context"
        return super().trains_in_phase(name, phase)

    def identity_text_features(self, pids: torch.Tensor) -> torch.Tensor:
        return encode_prompt(self.backbone, self.prompt, {"X": self.prompt_context[pids]})

    def phase1_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        pids = batch_pids(batch, self.num_classes)
        with torch.no_grad():
            image = F.normalize(self.backbone.encode_image(batch["pixel_values"]), dim=-1)
        text = F.normalize(self.identity_text_features(pids), dim=-1)
        return {
            "prompt": losses.symmetric_supervised_contrastive(image, text, pids, self.temperature("prompt"))
        }

    @torch.no_grad()
    def build_identity_bank(self, batches: Iterable[Batch] = (), chunk: int = 256) -> None:
        """Text features of every identity's learned prompt (no data needed: `batches` is ignored)."""
        rows = []
        for start in range(0, self.num_classes, chunk):
            pids = torch.arange(
                start, min(start + chunk, self.num_classes), device=self.prompt_context.device
            )
            rows.append(self.identity_text_features(pids))
        features = torch.cat(rows)
        self.set_identity_bank(features, torch.ones(self.num_classes, device=features.device))

    def set_phase(self, phase: int) -> None:
        super().set_phase(phase)
        if phase == 2:
            self.build_identity_bank()
