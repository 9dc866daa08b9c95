"""The prompt engine's config (the `generate.prompts` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from dppp.foundation.schema import StrictModel

# Sample keys carry the view index on three digits (p000123_v007), so an identity has at most 1000 views.
MAX_VIEWS_PER_IDENTITY = 1000


class ViewsConfig(StrictModel):
    """How many views (images) each identity gets, drawn once per identity from its own random stream.

    fixed:   every identity gets `mean` views (an integer).
    uniform: an integer drawn uniformly from [min, max].
    poisson: Poisson(mean) truncated to [min, max] (GenePerson averages ~19.65 views per identity).
    """

    distribution: Literal["fixed", "uniform", "poisson"] = "poisson"
    mean: float = Field(10.0, gt=0)
    min: int = Field(2, ge=1)  # two views at least: Re-ID needs a query and a gallery image of a person
    max: int = Field(30, ge=1, le=MAX_VIEWS_PER_IDENTITY)

    @model_validator(mode="after")
    def _consistent(self) -> ViewsConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        if self.distribution == "fixed" and (
            self.mean != int(self.mean) or not self.min <= self.mean <= self.max
        ):
            raise ValueError(f"fixed views need an integer mean within [min, max], got {self.mean}")
        if self.distribution == "poisson" and not self.min <= self.mean <= self.max:
            raise ValueError(
                f"the poisson mean {self.mean} lies outside [min, max] = [{self.min}, {self.max}]"
            )
        return self


class PromptsConfig(StrictModel):
    # None: the taxonomy shipped with the package (prompts/taxonomy.yaml). A relative path is read from
    # the working directory, like every other path of the experiment config.
    taxonomy: Path | None = None
    views: ViewsConfig = ViewsConfig()
    # The text encoder's context length (CLIP: 77, start and end tokens included).
    max_tokens: int = Field(77, ge=8, le=4096)
    # How prompt tokens are counted for that budget: "estimate" (no vocabulary; errs high, so it drops more
    # low-priority slots than needed), "renderer" (the diffusers renderer's own tokenizer, loaded from its
    # model: exact), or a tokenizer folder / hub id. Part of the config, so every command that builds
    # prompts (sample, generate) builds the same ones.
    tokenizer: str = Field("estimate", min_length=1)
