"""What the CLIP backbone needs of a model config: which CLIP, the tiny one's architecture, the Re-ID input
size and the seed of new weights. Pure pydantic, like every config model."""

from __future__ import annotations

from typing import Protocol

from pydantic import Field, model_validator

from dppp.foundation.schema import StrictModel


class BackboneSettings(Protocol):
    """The fields of a model config the backbone reads (trainer/methods/config.py's ModelConfig has them)."""

    backbone: str  # "tiny", a hub id or a local folder holding a CLIPModel + tokenizer
    tiny: TinyClipConfig
    image_size: tuple[int, int]
    init_seed: int


class TinyClipConfig(StrictModel):
    """A randomly initialised CLIP small enough for tests and the CPU default (built offline)."""

    hidden_size: int = Field(64, ge=8)
    intermediate_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    patch_size: int = Field(16, ge=2)
    projection_dim: int = Field(64, ge=4)
    max_text_length: int = Field(32, ge=8)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyClipConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self
