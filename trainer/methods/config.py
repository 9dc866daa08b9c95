"""The stage-2 model's typed config: method, backbone, prompts, loss weights and temperatures.

Pure pydantic (no torch import), so the experiment config and `dppp --help` stay fast. The model itself is
built from it by `dppp.trainer.methods.model.build_model`. docs/method.md explains every default. The
methods and their loss-weight models are those of trainer/methods/registry.py (torch-free as well).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from dppp.foundation.schema import StrictModel
from dppp.trainer.clip.config import TinyClipConfig
from dppp.trainer.methods.registry import MethodWeights, method_names, method_spec, weight_names

Temperature = Annotated[float, Field(gt=0)] | Literal["backbone"]

# `[NAME]` in a template marks where pseudo-word embeddings are injected.
PLACEHOLDER_PATTERN = re.compile(r"\[([A-Z][A-Z0-9]*)\]")


def placeholders_in(template: str) -> list[str]:
    return PLACEHOLDER_PATTERN.findall(template)


class ModelConfig(StrictModel):
    method: str = "pdm"  # a registered method (trainer/methods/registry.py)
    # "tiny" (random CPU model from `tiny`), a hub id or a local folder holding a CLIPModel + tokenizer.
    backbone: str = Field("tiny", min_length=1)
    tiny: TinyClipConfig = TinyClipConfig()
    # Re-ID input (height, width); the vision position embeddings are interpolated to this grid once.
    image_size: tuple[int, int] = (256, 128)
    init_seed: int = Field(0, ge=0)  # heads, inversion networks, prompts and the tiny CLIP

    full_template: str = "a [S] style photo of a [C] person"
    content_template: str = "a photo of a [C] person"
    clipreid_template: str = "a photo of a [X] person"
    clipreid_context_tokens: int = Field(4, ge=1, le=16)

    # Hidden width of the inversion MLPs; null = the text token width (512 for ViT-B/16, 64 for tiny).
    inversion_hidden_dim: int | None = Field(None, ge=4)
    inversion_dropout: float = Field(0.0, ge=0, lt=1)
    # View attributes that supervise the style pseudo-word; the batch's `style` dict carries their indices.
    style_attributes: tuple[str, ...] = ("illumination", "weather", "camid")

    # Fixed image-text temperatures (docs/method.md): "backbone" = the CLIP's own learned value, 1 / its logit
    # scale (0.01 for OpenAI's CLIPs, ~0.02-0.04 for the project's tiny one; 0.01 for a random `tiny`, which
    # learned nothing), or a number.
    align_temperature: Temperature = "backbone"
    content_temperature: Temperature = "backbone"
    prompt_temperature: Temperature = "backbone"
    i2t_temperature: Temperature = "backbone"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    # Batch-hard triplet margin; null selects the soft-margin form log(1 + exp(d_ap - d_an)).
    triplet_margin: float | None = Field(0.3, gt=0)
    # The retrieval embedding: after the BNNeck ("bn", BoT's choice) or before it, both L2-normalised.
    retrieval_feature: Literal["bn", "pre_bn"] = "bn"
    # The method's own loss weights (its registry entry's weights model). One flat `weights:` section
    # serves every method: keys of other methods' weights are accepted and dropped.
    weights: SerializeAsAny[MethodWeights] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _registered_method(cls, value: str) -> str:
        if value not in method_names():
            raise ValueError(f"unknown method {value!r} (known: {', '.join(method_names())})")
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _method_weights(cls, value: object, info: ValidationInfo) -> object:
        if "method" not in info.data:  # the method itself is invalid, and reported
            return MethodWeights()
        own = method_spec(info.data["method"]).weights
        if type(value) is own:
            return value
        if isinstance(value, MethodWeights):
            value = value.model_dump()
        if not isinstance(value, dict):
            return value
        others = weight_names() - set(own.model_fields)
        try:
            return own.model_validate({k: v for k, v in value.items() if k not in others})
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ValueError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError(f"image_size {list(value)} is too small (each side must be >= 8)")
        return value

    @field_validator("style_attributes")
    @classmethod
    def _distinct_attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value) or any(not name for name in value):
            raise ValueError("style_attributes must be distinct, non-empty names")
        return value

    @model_validator(mode="after")
    def _templates_and_grid(self) -> ModelConfig:
        expected = {
            "full_template": ["C", "S"],
            "content_template": ["C"],
            "clipreid_template": ["X"],
        }
        for field, names in expected.items():
            found = placeholders_in(getattr(self, field))
            if sorted(found) != names:
                want = " and ".join(f"[{n}]" for n in names)
                raise ValueError(f"{field} must contain {want} exactly once each (and no other placeholder)")
        if self.backbone == "tiny":
            patch = self.tiny.patch_size
            if any(side % patch for side in self.image_size):
                raise ValueError(
                    f"image_size {list(self.image_size)} must be a multiple of tiny.patch_size {patch}"
                )
        return self
