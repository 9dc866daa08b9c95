"""The renderer interface: everything the pipeline knows of a renderer. It imports no renderer.

- `Renderer`: a loaded renderer, built once per worker; it renders batches of views into images.
- `RendererKind`: one kind's entry in the registry (pipeline/renderers/registry.py): its config model
  (`generate.renderer`, told apart by `kind`), how to load it, and what the driver needs to know without
  loading it: the `--dry-run` estimate, the tokenizer of its text encoder, whether a worker takes a GPU.

Post-processing shared by all renderers (resize to the Re-ID size, encode) lives in pipeline/postprocess.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from dppp.prompts.spec import ViewSpec


@dataclass
class RenderedImage:
    image: Any  # PIL.Image.Image in RGB, at the renderer's own size (post-processing resizes it)
    attempts: int = 1  # > 1 when a blank / safety-filtered output was re-rendered with a bumped seed


class BatchSizeChoice(Protocol):
    chosen: int

    def describe(self) -> str:
        """The choice and what it rests on, for the run's summary."""


@dataclass(frozen=True)
class FixedBatchSize:
    """The choice of a renderer whose batch size changes no pixel, so there is nothing to measure."""

    chosen: int

    def describe(self) -> str:
        return f"batch size {self.chosen} (fixed by the renderer)"


class Renderer(Protocol):
    @property
    def batch_size(self) -> int:
        """Views per `render` call: the worker cuts each shard's views into batches of this size."""

    def choose_batch_size(self) -> BatchSizeChoice:
        """Settle `batch_size` (for `batch_size: auto`, by measuring) and say what was chosen."""

    def describe(self) -> dict[str, Any]:
        """Everything needed to re-render a sample: name, model id/revision, scheduler, steps, guidance,
        dtype, library versions. Stored in each sample's json under "renderer"."""

    def render(self, views: Sequence[ViewSpec]) -> list[RenderedImage]:
        """Render one batch; the output order matches `views`. Deterministic for a fixed batch."""


def duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.2f} h"
    minutes = hours * 60
    return f"{minutes:.0f} min" if minutes >= 1 else "under a minute"


@dataclass(frozen=True)
class RenderEstimate:
    hours: float  # on one device (GPU, or CPU core for the procedural renderer)
    device: str  # "GPU" or "CPU core"
    basis: str  # what the figure rests on, for the user to judge it

    def describe(self, images: int, shards: int) -> str:
        spread = ""
        if self.device == "GPU":  # the shard is the unit of work: n GPUs take ceil(shards / n) rounds
            spread = ", ".join(
                f"{duration(self.hours * math.ceil(shards / n) / shards)} on {n} GPUs" for n in (8, 64)
            )
            spread += "; "
        return f"expected rendering time for {images} images: {duration(self.hours)} on one {self.device} ({spread}{self.basis})"


@dataclass(frozen=True)
class TokenizerSource:
    """Where the tokenizer of a renderer's text encoder is (`generate.prompts.tokenizer: renderer`)."""

    source: str  # a folder or hub id
    subfolder: str  # "" for none: transformers joins it to paths
    revision: str | None


def no_estimate(config: Any, images: int) -> RenderEstimate | None:
    return None


@dataclass(frozen=True)
class RendererKind:
    """One renderer kind, as the registry holds it. `config` is its pydantic model, with a
    `kind: Literal["<name>"] = "<name>"` field: that literal is the name `generate.renderer.kind` takes."""

    config: type[BaseModel]
    # Builds the renderer from its config, in a worker: the place to import torch or a model library.
    load: Callable[[Any], Renderer]
    # Device-hours to render n images with this config (`dppp generate --dry-run`); None where nothing
    # measured applies (capacity.py says then that it has no estimate).
    estimate: Callable[[Any, int], RenderEstimate | None] = no_estimate
    # The tokenizer that reads its prompts; None for a renderer that reads no text.
    tokenizer: Callable[[Any], TokenizerSource] | None = None
    uses_gpu: bool = False  # on a cluster with GPUs, each worker holds one
    # Its config has a `taxonomy` field that defaults to generate.prompts.taxonomy (colours it draws).
    follows_prompts_taxonomy: bool = False

    @property
    def name(self) -> str:
        return self.config.model_fields["kind"].default
