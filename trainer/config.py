"""Stage-2 config: the `train` section (the model issue fills `model`, the training issue the rest)."""

from __future__ import annotations

from pydantic import Field

from dppp.schema import StrictModel
from trainer.model_config import ModelConfig


# What trains in each phase is fixed by the method (docs/method.md); these say how fast and how long.
# Defaults follow CLIP-ReID (Li et al., AAAI 2023): phase 1 learns only small prompt-side modules, so a
# high lr; phase 2 fine-tunes the pretrained image encoder, so a low lr with a linear warm-up.
class Phase1Schedule(StrictModel):
    epochs: int = Field(120, ge=0)
    lr: float = Field(3.5e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(0, ge=0)


class Phase2Schedule(StrictModel):
    epochs: int = Field(60, ge=0)
    lr: float = Field(5e-6, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(10, ge=0)


class TrainConfig(StrictModel):
    model: ModelConfig = ModelConfig()
    phase1: Phase1Schedule = Phase1Schedule()
    phase2: Phase2Schedule = Phase2Schedule()
