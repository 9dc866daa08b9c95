"""`dppp generate`'s config, the experiment's `generate` section: prompts, renderer, output, storage and
the Ray pool. Pydantic models only (no torch, ray or diffusers): every `dppp` command loads it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from dppp.dataset.limits import ShardStorageConfig
from dppp.foundation.schema import StrictModel
from dppp.pipeline.postprocess import OutputConfig
from dppp.pipeline.renderers.registry import DEFAULT, RendererConfig, default_renderer_config, find_kind
from dppp.prompts.config import PromptsConfig

# Config fields that do not change a single byte of the dataset: they may differ on resume.
RUN_ONLY_FIELDS = {
    "out",
    "workers",
    "storage",
    "max_attempts",
    "cpus_per_worker",
    "placement_timeout_s",
    "lease_ttl_s",
}


class GenerateConfig(StrictModel):
    out: str = "runs/demo/dataset"  # local path, file:// or s3:// URL
    seed: int = 0
    identities: int = Field(64, ge=1)
    ids_per_shard: int = Field(8, ge=1)
    workers: int | None = Field(None, ge=1)  # None: one per GPU, else one per CPU core
    prompts: PromptsConfig = PromptsConfig()
    renderer: RendererConfig = Field(default_factory=default_renderer_config)
    output: OutputConfig = OutputConfig()
    storage: ShardStorageConfig = ShardStorageConfig()

    @model_validator(mode="before")
    @classmethod
    def _renderer_palette_follows_prompts(cls, data: Any) -> Any:
        """A renderer that draws the taxonomy's colours (the procedural one) draws those of the taxonomy
        the prompts come from; a renderer section without a kind is the default renderer's."""
        if isinstance(data, dict):
            prompts, renderer = data.get("prompts"), data.get("renderer") or {}
            taxonomy = prompts.get("taxonomy") if isinstance(prompts, dict) else None
            if taxonomy and isinstance(renderer, dict):
                name = renderer.get("kind", DEFAULT.name)
                kind = find_kind(name)
                if kind is not None and kind.follows_prompts_taxonomy and renderer.get("taxonomy") is None:
                    data = {**data, "renderer": {"kind": name, **renderer, "taxonomy": taxonomy}}
        return data

    # Shard attempts (a render error or a dead actor each count) before the job reports the shard failed.
    max_attempts: int = Field(3, ge=1)
    # Ray resources per actor: one GPU each when the cluster has GPUs (diffusers), else CPUs.
    cpus_per_worker: float = Field(1.0, gt=0)
    # How long the job waits with no renderer actor placed on the cluster (at the start, or after the
    # nodes holding every actor died) before it stops with exit 1. Raise it where an autoscaler takes
    # longer to bring a node up. While some actor runs, lost ones are re-requested without a deadline.
    placement_timeout_s: float = Field(300.0, gt=0)
    # How long a shard lease outlives its job's last heartbeat (renewed every third of it): a job that
    # dies holding a shard lets another job render it after this long (pipeline/leases.py).
    lease_ttl_s: float = Field(120.0, gt=0)
