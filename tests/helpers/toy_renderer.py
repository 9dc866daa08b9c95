"""A renderer kind defined outside the pipeline, as a new one would be: one module, one registry entry.

`kind: toy` paints each view as flat colour bands from its seeds, with no model and no randomness beyond
them, so a test can recompute every pixel a shard should hold. Importing this module registers the kind;
a Ray worker imports it, and so registers it there too, when it unpickles a config that holds a
`ToyRendererConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from PIL import Image
from pydantic import Field

from dppp.foundation.schema import StrictModel
from dppp.pipeline.renderer import FixedBatchSize, RenderedImage, RendererKind
from dppp.pipeline.renderers.registry import register
from dppp.prompts.spec import ViewSpec


class ToyRendererConfig(StrictModel):
    kind: Literal["toy"] = "toy"
    height: int = Field(32, ge=4)
    width: int = Field(16, ge=4)
    batch_size: int = Field(3, ge=1)


def toy_pixels(view: ViewSpec, height: int, width: int) -> Image.Image:
    """The identity's colour on the top half, the view's own colour on the bottom half."""
    top = tuple((view.identity_seed >> shift) & 0xFF for shift in (0, 8, 16))
    bottom = tuple((view.seed >> shift) & 0xFF for shift in (0, 8, 16))
    image = Image.new("RGB", (width, height), top)
    image.paste(bottom, (0, height // 2, width, height))
    return image


class ToyRenderer:
    def __init__(self, config: ToyRendererConfig):
        self.config = config
        self.batch_size = config.batch_size
        self.calls: list[int] = []  # the size of each render call, for a test to see the batches

    def choose_batch_size(self) -> FixedBatchSize:
        return FixedBatchSize(self.batch_size)

    def describe(self) -> dict[str, Any]:
        return {"name": "toy", "size": [self.config.height, self.config.width]}

    def render(self, views: Sequence[ViewSpec]) -> list[RenderedImage]:
        self.calls.append(len(views))
        return [RenderedImage(toy_pixels(v, self.config.height, self.config.width)) for v in views]


TOY = RendererKind(ToyRendererConfig, load=ToyRenderer)
register(TOY)
