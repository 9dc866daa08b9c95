"""Post-processing shared by all renderers: resize to the Re-ID output size, encode for the shard."""

from __future__ import annotations

from typing import Literal

from dppp.schema import StrictModel


class OutputConfig(StrictModel):
    height: int = 256
    width: int = 128
    format: Literal["jpg", "png", "webp"] = "jpg"
    quality: int = 90
