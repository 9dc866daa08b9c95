"""Textual inversion network: an image embedding -> one token embedding, a pseudo-word (PDM's S or C).

Pic2Word-style (Saito et al., CVPR 2023) MLP: three linear layers with GELU and optional dropout. Its
input is the L2-normalised CLIP image embedding, so the scale of a backbone's features does not matter;
its output lives in the text encoder's token-embedding space and is injected at a placeholder.
"""

from __future__ import annotations

import torch
from torch import nn


class TextualInversion(nn.Module):
    def __init__(self, image_dim: int, token_dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(image_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, token_dim),
        )

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """[B, image_dim] -> [B, token_dim]"""
        return self.net(nn.functional.normalize(image_embedding, dim=-1))
