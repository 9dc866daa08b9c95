"""One renderer worker: turns a planned shard (whole identities) into a committed shard on storage.

The class is plain Python so a benchmark or a test can drive it in a loop; the Ray job
(pipeline/generate.py) wraps it in an actor. Within a shard, encoding of batch i overlaps rendering of
batch i+1 (an encoder thread); across shards, the tar write and upload of shard n overlap rendering of
shard n+1 (the actor runs two `run` calls at once, and only rendering holds the render lock).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from dppp.dataset.keys import sample_key, view_record
from dppp.dataset.shard_writer import Sample, write_shard
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.plan import ShardPlan
from dppp.pipeline.postprocess import extension, finish
from dppp.pipeline.prompting import prompt_engine
from dppp.pipeline.publish import publish_shard
from dppp.pipeline.renderers.registry import load_renderer

if TYPE_CHECKING:
    from dppp.dataset.records import ShardRecord
    from dppp.pipeline.config import GenerateConfig
    from dppp.prompts.spec import ViewSpec

# torch is imported inside limit_threads, and only if installed: the procedural renderer's actors never load
# it.

# A shard is written in a temp folder named for the process writing it, `dppp-shard-<pid>-<shard>-<random>`:
# a worker killed mid-write (SIGKILL, a lost node, ray.kill) leaves its folder behind, and the next worker
# started on that machine removes the folders of writers that are gone.
_SHARD_TEMP = "dppp-shard-"
_SHARD_TEMP_NAME = re.compile(re.escape(_SHARD_TEMP) + r"(\d+)-\d{6,}-")


def remove_stale_shard_folders(root: str | None = None) -> list[str]:
    """Remove the shard temp folders (in `root`, default the system temp folder) whose writer process is
    gone: named by this code, owned by this user, their pid not running. Anything else stays: another
    user's, a live worker's (of this job or another), a folder this code did not name. Returns the removed."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _SHARD_TEMP_NAME.match(entry.name)
        try:
            if not match or not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _running(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
    render_s: float  # time holding the renderer
    publish_s: float  # tar write + upload + commit
    worker: str
    node: str = ""  # the Ray node that rendered it (set by the actor; empty outside Ray)


class ShardWorker:
    """Loads the prompt engine and the renderer once; `run(plan)` renders, writes, publishes, commits."""

    def __init__(
        self, config: GenerateConfig, *, threads: int | None = None, name: str = "worker", renderer=None
    ):
        """`renderer`: an already loaded one (benchmarks reuse a warm, compiled renderer); else loaded."""
        if threads is not None:
            limit_threads(threads)
        remove_stale_shard_folders()  # what workers killed mid-write on this machine left behind
        self.config = config
        self.name = name
        self.engine = prompt_engine(config)
        self.renderer = renderer if renderer is not None else load_renderer(config.renderer)
        self.storage = open_storage(config.out, config.storage)
        self._common: dict[str, Any] | None = None
        self._render_lock = threading.Lock()
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-encode")

    def choose_batch_size(self) -> tuple[int, str]:
        """Probe the renderer's fastest batch size (`batch_size: auto`); returns it and a description."""
        with self._render_lock:
            result = self.renderer.choose_batch_size()
        return result.chosen, result.describe()

    def run(self, plan: ShardPlan) -> ShardResult:
        with self._render_lock:
            started = time.perf_counter()  # after the lock: waiting for the other shard is not rendering
            encoding = self._render_batches(plan)
            rendered = time.perf_counter()
        # The last batch is encoded outside the lock: the next shard's rendering starts meanwhile.
        samples = [sample for future in encoding for sample in future.result()]
        record = self.publish(plan, samples, render_s=rendered - started)
        return ShardResult(record, rendered - started, time.perf_counter() - rendered, self.name)

    def views(self, plan: ShardPlan) -> list[ViewSpec]:
        return [view for pid in plan.pids for view in self.engine.views(pid)]

    def render(self, plan: ShardPlan) -> list[Sample]:
        """Render and encode the shard's samples (each batch encodes while the next one renders)."""
        return [sample for future in self._render_batches(plan) for sample in future.result()]

    def _render_batches(self, plan: ShardPlan) -> list[Future]:
        """Render the shard's views in fixed batches; each batch's encoding is queued as it comes."""
        views = self.views(plan)
        batch_size = self.renderer.batch_size
        pending = []
        for start in range(0, len(views), batch_size):
            batch = views[start : start + batch_size]
            images = self.renderer.render(batch)
            pending.append(self._encoder.submit(self._encode, batch, images))
        return pending

    def _encode(self, views: list[ViewSpec], images: list[Any]) -> list[Sample]:
        output = self.config.output
        return [
            Sample(
                key=sample_key(view.pid, view.view),
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
        return {**view_record(view), "attempts": attempts, **self._common_metadata()}

    def _common_metadata(self) -> dict[str, Any]:
        """What every sample's json shares. Built at the first sample, not at load: `batch_size: auto`
        is only known after the probe, and each sample records the size that rendered it."""
        if self._common is None:
            self._common = {
                "renderer": self.renderer.describe(),
                "output": self.config.output.model_dump(),
                "dataset_seed": self.config.seed,
                "taxonomy_sha256": self.engine.taxonomy_hash,
                "versions": package_versions(),
            }
        return self._common

    def publish(self, plan: ShardPlan, samples: list[Sample], *, render_s: float = 0.0) -> ShardRecord:
        with tempfile.TemporaryDirectory(prefix=f"{_SHARD_TEMP}{os.getpid()}-{plan.index:06d}-") as tmp:
            path = os.path.join(tmp, "shard.tar")
            started = time.perf_counter()
            info = write_shard(samples, path)
            timings = {"render_s": round(render_s, 4), "write_s": round(time.perf_counter() - started, 4)}
            return publish_shard(self.storage, plan.index, path, info, timings, fingerprint=plan.fingerprint)
