"""The renderer interface: loaded once per worker, renders batches of views into images.

Every renderer (procedural, diffusers) implements `Renderer`; `load_renderer` builds one from its config.
Post-processing shared by all renderers (resize to the Re-ID size, encode) lives in pipeline/postprocess.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import Field

from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig
from dppp.pipeline.renderers.procedural.renderer import ProceduralRendererConfig
from dppp.prompts.spec import ViewSpec

RendererConfig = Annotated[ProceduralRendererConfig | DiffusersRendererConfig, Field(discriminator="kind")]


@dataclass
class RenderedImage:
    image: Any  # PIL.Image.Image in RGB, at the renderer's own size (post-processing resizes it)
    attempts: int = 1  # > 1 when a blank / safety-filtered output was re-rendered with a bumped seed


class Renderer(Protocol):
    def describe(self) -> dict[str, Any]:
        """Everything needed to re-render a sample: name, model id/revision, scheduler, steps, guidance,
        dtype, library versions. Stored in each sample's json under "renderer"."""

    def render(self, views: Sequence[ViewSpec]) -> list[RenderedImage]:
        """Render one batch; the output order matches `views`. Deterministic for a fixed batch."""


def load_renderer(config: RendererConfig) -> Renderer:
    """Build the configured renderer (imports torch/diffusers only when that renderer needs them)."""
    if config.kind == "procedural":
        from dppp.pipeline.renderers.procedural.renderer import ProceduralRenderer

        return ProceduralRenderer(config)
    from dppp.pipeline.renderers.diffusers_renderer import DiffusersRenderer

    return DiffusersRenderer(config)
