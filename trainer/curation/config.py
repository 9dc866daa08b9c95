"""The `curate:` section: which CLIP judges, each signal's threshold, and the Ray pool of `dppp curate`.

The defaults hold on datasets like the demo's with the project's own CLIP (models/tiny-clip): measured
in docs/curation.md, where each signal and why its threshold sits where it does is explained. A raw CLIP
cosine depends on the model, so `min_identity_consistency` is the one threshold to revisit with another
`model`; the others are ranks, margins or pixel statistics.
"""

from __future__ import annotations

from pydantic import Field

from dppp.dataset.limits import ShardStorageConfig
from dppp.foundation.schema import StrictModel


class SignalThresholds(StrictModel):
    """A sample is rejected by the first signal, in this order, whose score is past its threshold."""

    # Degenerate image: luminance standard deviation (0-255) below this is a blank or black frame.
    min_contrast: float = Field(6.0, ge=0)
    # Degenerate image: correlation of neighbouring pixels' luminance below this is structureless noise
    # (a rendered scene sits at 0.8-1.0, uniform noise at 0).
    min_structure: float = Field(0.2, ge=-1, le=1)
    # Prompt-image agreement, as a margin: cos(image, its own prompt) minus the best cos(image, a prompt of
    # another identity of the shard). Below this the image matches somebody else's description better.
    min_prompt_margin: float = Field(-0.08, ge=-2, le=2)
    # Prompt-image agreement, as a rank: the share of other identities' prompts of the shard that match
    # the image better than its own prompt. Above this the image is not what its prompt says.
    max_prompt_rank: float = Field(0.05, ge=0, le=1)
    # Identity consistency: cos(view, mean of its identity's other usable views). Below this the view does
    # not look like the rest of its identity (a raw cosine: revisit it with another model).
    min_identity_consistency: float = Field(0.58, ge=-1, le=1)
    # Identity consistency, as a margin: that cosine minus the best one against another identity's mean.
    # Below this the view looks more like another person of the shard than like its own.
    min_identity_margin: float = Field(-0.15, ge=-2, le=2)
    # Near-duplicate identities: two identities of a shard whose mean views are this alike (cosine).
    near_duplicate: float = Field(0.97, ge=-1, le=1)
    reject_near_duplicates: bool = False  # reported, not rejected, by default


class CurateConfig(StrictModel):
    # The judging CLIP: a local folder (default: the project's own, pretrained here) or a hub id.
    model: str = "models/tiny-clip"
    # The CLIP's input (height, width): models/tiny-clip was trained at 128x64 (its model card says so).
    image_size: tuple[int, int] = (128, 64)
    thresholds: SignalThresholds = SignalThresholds()
    batch_size: int = Field(64, ge=1)  # images per CLIP forward pass
    workers: int | None = Field(None, ge=1)  # None: one per GPU, else one per CPU core
    cpus_per_worker: float = Field(1.0, gt=0)
    max_attempts: int = Field(3, ge=1)  # tries of a shard whose actor was lost; damaged data fails at once
    placement_timeout_s: float = Field(300.0, gt=0)
    storage: ShardStorageConfig = ShardStorageConfig()

    def decisive(self) -> dict:
        """What decides the file's bytes (model, input size, thresholds); not how the job runs."""
        return self.model_dump(mode="json", include={"model", "image_size", "thresholds"})
