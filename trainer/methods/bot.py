"""Bag of Tricks (Luo et al. 2019) on the CLIP image encoder: the shared phase 2 alone."""

from __future__ import annotations

import torch

from dppp.trainer.methods.model import Batch, ReIDModel


class BoT(ReIDModel):
    """Bag of Tricks baseline (Luo et al. 2019) on the CLIP image encoder: ID + triplet, phase 2 only."""

    method = "bot"

    def phase1_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise ValueError("bot has no phase 1")
