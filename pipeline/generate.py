"""`dppp generate`: the Ray batch job rendering identities into committed shards (issue 5 fills the runner)."""

from __future__ import annotations

from pydantic import Field

from dppp.schema import StrictModel
from pipeline.postprocess import OutputConfig
from pipeline.renderer import RendererConfig
from pipeline.renderers.procedural import ProceduralRendererConfig
from pipeline.storage import StorageConfig
from prompts.config import PromptsConfig


class GenerateConfig(StrictModel):
    out: str = "runs/demo/dataset"  # local path, file:// or s3:// URL
    seed: int = 0
    identities: int = Field(64, ge=1)
    ids_per_shard: int = Field(8, ge=1)
    workers: int | None = Field(None, ge=1)  # None: one per GPU, else one per CPU core
    prompts: PromptsConfig = PromptsConfig()
    renderer: RendererConfig = ProceduralRendererConfig()
    output: OutputConfig = OutputConfig()
    storage: StorageConfig = StorageConfig()
