"""One renderer worker: turns a planned shard (whole identities) into a committed shard on storage.

The class is plain Python so a benchmark or a test can drive it in a loop; the Ray job
(pipeline/generate.py) wraps it in an actor. Within a shard, encoding of batch i overlaps rendering of
batch i+1 (an encoder thread); across shards, the tar write and upload of shard n overlap rendering of
shard n+1 (the actor runs two `run` calls at once, and only rendering holds the render lock).
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pipeline.plan import ShardPlan

if TYPE_CHECKING:
    from pipeline.generate import GenerateConfig
    from pipeline.records import ShardRecord
    from pipeline.shards import Sample
    from prompts.spec import ViewSpec

# Packages whose versions decide the bytes of a sample; recorded so a sample can be regenerated exactly.
_VERSIONED_PACKAGES = ("dppp", "numpy", "pillow", "torch", "diffusers", "transformers")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def limit_threads(threads: int) -> None:
    """Pin the math libraries' thread pools: the thread count changes floating-point results."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # the procedural renderer needs no torch
        pass


@dataclass
class ShardResult:
    record: ShardRecord
    render_s: float  # time holding the renderer (render + the encode tail)
    publish_s: float  # tar write + upload + commit
    worker: str


class ShardWorker:
    """Loads the prompt engine and the renderer once; `run(plan)` renders, writes, publishes, commits."""

    def __init__(self, config: GenerateConfig, *, threads: int | None = None, name: str = "worker"):
        from pipeline.renderer import load_renderer
        from pipeline.storage import open_storage
        from prompts.engine import PromptEngine

        if threads is not None:
            limit_threads(threads)
        self.config = config
        self.name = name
        self.engine = PromptEngine.from_config(config)
        self.renderer = load_renderer(config.renderer)
        self.storage = open_storage(config.out, config.storage)
        self.batch_size = getattr(config.renderer, "batch_size", 16)
        self._common = {
            "renderer": self.renderer.describe(),
            "output": config.output.model_dump(),
            "dataset_seed": config.seed,
            "taxonomy_sha256": self.engine.taxonomy_hash,
            "versions": package_versions(),
        }
        self._render_lock = threading.Lock()
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-encode")

    def run(self, plan: ShardPlan) -> ShardResult:
        with self._render_lock:  # timed inside: the wait for the other call's rendering is not this shard's
            started = time.perf_counter()
            samples = self.render(plan)
            rendered = time.perf_counter()
        record = self.publish(plan, samples, render_s=rendered - started)
        return ShardResult(record, rendered - started, time.perf_counter() - rendered, self.name)

    def views(self, plan: ShardPlan) -> list[ViewSpec]:
        return [view for pid in plan.pids for view in self.engine.views(pid)]

    def render(self, plan: ShardPlan) -> list[Sample]:
        """Render the shard's views in fixed batches, encoding each batch while the next one renders."""
        views = self.views(plan)
        pending = []
        for start in range(0, len(views), self.batch_size):
            batch = views[start : start + self.batch_size]
            images = self.renderer.render(batch)
            pending.append(self._encoder.submit(self._encode, batch, images))
        return [sample for future in pending for sample in future.result()]

    def _encode(self, views: list[ViewSpec], images: list[Any]) -> list[Sample]:
        from pipeline.postprocess import extension, finish
        from pipeline.shards import Sample

        output = self.config.output
        return [
            Sample(
                key=view.key,
                image_bytes=finish(rendered.image, output),
                image_ext=extension(output),
                metadata=self.metadata(view, attempts=rendered.attempts),
                prompt=view.prompt,
                pid=view.pid,
            )
            for view, rendered in zip(views, images, strict=True)
        ]

    def metadata(self, view: ViewSpec, *, attempts: int) -> dict[str, Any]:
        """The sample's json: everything needed to regenerate this one image bit for bit."""
        return {
            "key": view.key,
            "pid": view.pid,
            "view": view.view,
            "camid": view.camid,
            "attributes": dict(view.attributes),
            "prompt": view.prompt,
            "negative_prompt": view.negative_prompt,
            "dropped_slots": list(view.dropped_slots),
            "seed": view.seed,
            "identity_seed": view.identity_seed,
            "attempts": attempts,
            **self._common,
        }

    def publish(self, plan: ShardPlan, samples: list[Sample], *, render_s: float = 0.0) -> ShardRecord:
        from pipeline.records import publish_shard
        from pipeline.shards import write_shard

        with tempfile.TemporaryDirectory(prefix=f"dppp-shard-{plan.index:06d}-") as tmp:
            path = os.path.join(tmp, "shard.tar")
            started = time.perf_counter()
            info = write_shard(samples, path)
            timings = {"render_s": round(render_s, 4), "write_s": round(time.perf_counter() - started, 4)}
            return publish_shard(self.storage, plan.index, path, info, timings)
