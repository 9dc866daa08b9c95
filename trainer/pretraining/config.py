"""`pretrain:` in the experiment config: CLIP-style image-text pretraining of the project's own tiny CLIP.

Pure pydantic (no torch import), like every config model. The run's shared settings (data, out, run_name,
workers, checkpoints, logging) are dppp.trainer.training.config.RunSettings, the same as `train:`'s; docs/pretraining.md
explains every default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dppp.foundation.schema import StrictModel
from dppp.trainer.clip.config import TinyClipConfig
from dppp.trainer.data.config import AugmentConfig, DataConfig
from dppp.trainer.evaluation.config import ZeroShotConfig
from dppp.trainer.methods.checkpoint import register_model_config
from dppp.trainer.training.config import RunSettings

PRETRAIN_METHOD = "clip"  # checkpoint.json's `method` for a pretraining checkpoint
CLIP_CONTEXT = 77  # CLIP's text context, start and end tokens included


class PretrainArchitecture(TinyClipConfig):
    """The CLIP built from scratch: the demo's size by default (width 128, 2 layers, patch 16), CLIP's context."""

    hidden_size: int = Field(128, ge=8)
    intermediate_size: int = Field(256, ge=8)
    projection_dim: int = Field(128, ge=4)
    max_text_length: int = Field(CLIP_CONTEXT, ge=8)


class PretrainAugment(AugmentConfig):
    """No flip (prompts say "seen from the left side") and no erasing (it hides what the prompt names)."""

    flip_p: float = Field(0.0, ge=0, le=1)
    erase_p: float = Field(0.0, ge=0, le=1)


class PretrainDataConfig(DataConfig):
    # P people x K views per batch. Each view's own prompt is its positive (the other view of the person,
    # whose prompt differs in the view's words, is a hard negative); the person's appearance caption is
    # shared by its K views, which are all its positives (docs/pretraining.md).
    ids_per_batch: int = Field(32, ge=2)
    images_per_id: int = Field(2, ge=1)
    pool_identities: int | None = Field(128, ge=2)
    num_workers: int = Field(1, ge=0)
    augment: PretrainAugment = PretrainAugment()


class PretrainModelConfig(StrictModel):
    method: Literal["clip"] = PRETRAIN_METHOD
    architecture: PretrainArchitecture = PretrainArchitecture()
    # Trained at the Re-ID input size; saved with a square grid (every CLIP checkpoint's) of side height/patch.
    image_size: tuple[int, int] = (128, 64)
    init_seed: int = Field(0, ge=0)
    # CLIP's temperature: learnable, from CLIP's own start (0.07) and never below 1 / max_logit_scale.
    init_temperature: float = Field(0.07, gt=0, le=1)
    max_logit_scale: float = Field(100.0, gt=1)
    # Weight of the second caption of each image: its person's appearance alone (prompts/captions.py), the
    # text every view of that person shares. 0: full prompts only.
    appearance_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _grid(self) -> PretrainModelConfig:
        patch = self.architecture.patch_size
        height, width = self.image_size
        if height % patch or width % patch:
            raise ValueError(
                f"image_size {list(self.image_size)} must be a multiple of architecture.patch_size {patch}"
            )
        if width > height:
            raise ValueError(
                f"image_size {list(self.image_size)}: the saved square grid follows the height, "
                "so the width must not exceed it"
            )
        if self.architecture.max_text_length != CLIP_CONTEXT:
            raise ValueError(
                f"architecture.max_text_length must be CLIP's {CLIP_CONTEXT} (prompts are written for it)"
            )
        return self


register_model_config(PRETRAIN_METHOD, PretrainModelConfig)  # its checkpoints validate as pretraining's


class PretrainSchedule(StrictModel):
    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)  # not on biases, norms, embeddings and the temperature
    warmup_epochs: int = Field(1, ge=0)


class PretrainConfig(RunSettings):
    model: PretrainModelConfig = PretrainModelConfig()
    schedule: PretrainSchedule = PretrainSchedule()
    data: PretrainDataConfig = PretrainDataConfig()
    out: str = "runs/pretrain/train"
    run_name: str = Field("tiny-clip", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    zero_shot: ZeroShotConfig = ZeroShotConfig()
    # Besides <out>/<run_name>/final: a local folder the finished CLIP folder is copied to (e.g. models/x).
    export: str | None = None
