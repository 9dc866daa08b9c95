"""`dppp curate`: the Ray job that scores every committed shard and writes URL/curation.parquet.

Shaped like `dppp generate` (pipeline/generate.py): the driver reads the listing and the commit records
(never a tar), hands the shards not yet judged by this run to a pool of curate actors (the same
foundation/actor_pool.py: one actor per GPU on a cluster, one per CPU core locally), each of which reads a
shard, scores it (trainer/curation/scorer.py) and publishes the shard's file: the unit of work, retry and
commit. A lost actor's shard is re-queued; a damaged shard fails at once (it would fail again) and the
job exits 1 after the others, every shard file written staying valid. The driver then merges the shard
files (small parquet files, dataset/curation.py) into curation.parquet and draws the rejects' contact
sheet from a bounded number of samples. A rerun resumes: same dataset and settings, same run folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dppp.dataset.curation import (
    REJECTS_SHEET,
    committed_refs,
    dataset_fingerprint,
    finished_parts,
    merge_parts,
    run_id,
)
from dppp.dataset.format import READ_IMAGE_EXTS, shard_name
from dppp.dataset.records import read_dataset_manifest
from dppp.dataset.shard_reader import image_member, read_shard
from dppp.foundation.actor_pool import ActorPool, actor_class, short_error
from dppp.foundation.contact_sheet import make_contact_sheet
from dppp.foundation.errors import ConfigError, DataError, ReportedError
from dppp.foundation.ray_cluster import start_ray
from dppp.foundation.storage.urls import open_storage
from dppp.trainer.curation.config import CurateConfig

# ray, torch and transformers, and the modules that import them (scorer.py, clip/backbone.py,
# data/transforms.py), are imported inside the functions that need them: `dppp curate --dry-run` and a bad
# setting are answered without them.

SHEET_PER_REASON = 8  # rejects shown per reason on the contact sheet
# From benchmarks/bench_curate.py (docs/curation.md); --dry-run only. Both on the shared 2-core VM at load
# average ~30, so low: an uncontended core does more.
CPU_IMAGES_PER_S_PER_WORKER = 30.0  # measured: models/tiny-clip, 256x128 JPEG, per busy CPU actor
# Estimated: the same actor with its CLIP forward (48% of its time on CPU) moved to a GPU; reading,
# decoding and the pixel signals stay on its CPU core and bound it.
GPU_IMAGES_PER_S_PER_WORKER = 59.0


class CurationFailed(ReportedError):
    """Some shards could not be judged (damaged, or failed every attempt); the shard files written stay
    valid and a rerun resumes. Exit 1: not bad input. `summary` says which."""

    exit_code = 1

    def __init__(self, summary: CurateSummary):
        failed = "; ".join(f"shard {i:06d}: {e}" for i, e in sorted(summary.failed.items())[:3])
        more = f" (and {len(summary.failed) - 3} more)" if len(summary.failed) > 3 else ""
        super().__init__(
            f"{len(summary.failed)} shard(s) of {summary.url} could not be curated: {failed}{more}; "
            "no curation.parquet written"
        )
        self.summary = summary


@dataclass
class CurateSummary:
    url: str
    run: str  # the run folder under curation/
    shards_total: int
    shards_done: int = 0  # judged by this run
    shards_skipped: int = 0  # judged by an earlier run with the same settings
    images: int = 0  # judged by this run
    wall_s: float = 0.0
    busy_s: float = 0.0  # actor time spent judging, all actors together
    clip_s: float = 0.0  # of which in the CLIP's forward passes (on the GPU where there is one)
    counts: Any = None  # dppp.dataset.curation.Counts of the whole file
    failed: dict[int, str] = field(default_factory=dict)
    sheet: str | None = None  # URL of the rejects' contact sheet, None when nothing was rejected
    workers: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class CurationPlan:
    storage: Any
    records: list  # dppp.dataset.curation.ShardRef of the committed shards, by index
    run: str
    meta: dict[str, Any]  # what every file of the run records: dataset fingerprint, settings
    done: set[int]

    @property
    def images(self) -> int:
        return sum(r.count for r in self.records)

    @property
    def todo(self) -> list:
        return [r for r in self.records if r.index not in self.done]


def model_digest(model: str) -> str:
    """A hash of a local CLIP folder's weights and config (same folder name, other weights: another
    run); a hub id stands for itself."""
    path = Path(model)
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for name in sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".safetensors", ".bin")):
        if name == "model_card.json":
            continue
        with open(path / name, "rb") as stream:
            for chunk in iter(lambda s=stream: s.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def check_model(config: CurateConfig) -> CurateConfig:
    """Check the judging CLIP without loading its weights (a ConfigError at `curate.model`), and make a
    relative local folder absolute: the actors may run in another directory."""
    if config.model == "tiny":
        return config
    from huggingface_hub.utils import logging as hub_logging

    from dppp.trainer.clip.backbone import check_backbone

    hub_logging.set_verbosity_error()  # a hub id out of reach: one line below, not a retry per attempt
    try:
        check_backbone(config.model)
    except ConfigError as exc:
        raise ConfigError(exc.problem, path="curate.model") from None
    if os.path.isdir(config.model):
        return config.model_copy(update={"model": os.path.abspath(config.model)})
    return config


def plan_curation(url: str, config: CurateConfig) -> CurationPlan:
    """What the job has to do: the committed shards, this run's folder, the shards it already judged.
    Reads dataset.json, the listing and the records; DataError when there is nothing to curate."""
    storage = open_storage(url, config.storage)
    manifest = read_dataset_manifest(storage)
    records = committed_refs(storage)
    if not records:
        raise DataError(f"{storage.url}: no committed shard to curate (generate the dataset first)")
    settings = {**config.decisive(), "model_digest": model_digest(config.model)}
    settings["model"] = Path(config.model).name if Path(config.model).is_dir() else config.model
    dataset = dataset_fingerprint(manifest)
    run = run_id(dataset, settings)
    meta = {"dataset": dataset, "settings": settings}
    return CurationPlan(storage, records, run, meta, finished_parts(storage, run))


def run_curate(
    url: str, config: CurateConfig, *, ray_address: str | None = None, progress: bool = True
) -> CurateSummary:
    """Judge every committed shard of the dataset at `url` not yet judged with these settings, then write
    curation.parquet and curation_rejects.png. Raises CurationFailed (exit 1) when a shard could not be
    judged: the others' files stay, a rerun resumes."""
    started = time.perf_counter()
    config = check_model(config)
    plan = plan_curation(url, config)
    todo = plan.todo
    summary = CurateSummary(plan.storage.url, plan.run, len(plan.records), shards_skipped=len(plan.done))
    if todo:
        start_ray(ray_address, (config.workers or 1) * config.cpus_per_worker)
        _judge(plan, config, todo, summary, progress)
    if summary.failed:
        summary.wall_s = time.perf_counter() - started
        raise CurationFailed(summary)
    examples: dict[str, list[tuple[int, str, str]]] = {}
    summary.counts = merge_parts(
        plan.storage,
        plan.run,
        plan.records,
        plan.meta,
        examples=examples,
        examples_per_reason=SHEET_PER_REASON,
    )
    summary.sheet = write_rejects_sheet(plan.storage, examples)
    summary.wall_s = time.perf_counter() - started
    return summary


def _pool_shape(config: CurateConfig) -> tuple[int, dict[str, float]]:
    """How many actors, and the Ray resources of each: one per GPU on a GPU cluster, else per CPU."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        return config.workers or gpus, {"num_gpus": 1, "num_cpus": config.cpus_per_worker}
    cpus = int(resources.get("CPU", 1) // config.cpus_per_worker) or 1
    return config.workers or cpus, {"num_cpus": config.cpus_per_worker}


class CurateActor:
    """A Ray actor around a ShardScorer; like generate's ShardActor, its constructor does nothing so the
    pool tells a cluster without room from a slow model load."""

    def __init__(self, config: CurateConfig, url: str, run: str, meta: dict[str, Any], threads: int | None):
        self._args, self._scorer, self._storage = (config, url, run, meta, threads), None, None

    def load(self) -> str:
        import ray

        from dppp.trainer.curation.scorer import ShardScorer

        config, url, _, _, threads = self._args
        self._scorer = ShardScorer(config, threads=threads)
        self._storage = open_storage(url, config.storage)
        return ray.get_runtime_context().get_node_id()

    def run(self, record) -> tuple[int, float, float]:
        from dppp.trainer.curation.scorer import score_shard

        _, _, run, meta, _ = self._args
        return score_shard(self._scorer, self._storage, record, run, meta)


def _judge(plan: CurationPlan, config: CurateConfig, todo: list, summary: CurateSummary, progress: bool):
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    n_workers, resources = _pool_shape(config)
    actors, threads = actor_class(CurateActor, resources, plan.storage.worker_env())

    def spawn(name: str):
        return actors.remote(config, plan.storage.url, plan.run, plan.meta, threads)

    pool = ActorPool(
        spawn,
        min(n_workers, len(todo)),
        placement_timeout_s=config.placement_timeout_s,
        max_starts=config.max_attempts,
    )
    summary.workers = min(n_workers, len(todo))
    queue, attempts = deque(todo), {}
    in_flight: dict[Any, tuple[str, Any, Any]] = {}
    bar = _Bar(len(todo), sum(r.count for r in todo), progress)
    try:
        while queue or in_flight:
            busy = {name for name, _, _ in in_flight.values()}
            for name, actor in pool.ready().items():
                if queue and name not in busy:
                    record = queue.popleft()
                    in_flight[actor.run.remote(record)] = (name, actor, record)
            if not in_flight and (reason := pool.out_of_capacity()):
                for record in queue:
                    summary.failed[record.index] = f"not judged: {reason}"
                return
            timeout = None if in_flight else pool.wait_timeout()
            ready, _ = ray.wait([*in_flight, *pool.probes()], num_returns=1, timeout=timeout)
            if not ready:
                continue
            if pool.is_probe(ready[0]):
                pool.settle(ready[0])
                continue
            name, actor, record = in_flight.pop(ready[0])
            try:
                images, seconds, clip_seconds = ray.get(ready[0])
            except (RayActorError, RayTaskError) as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(exc, RayActorError):
                    pool.lost(name, actor, exc)
                attempts[record.index] = attempts.get(record.index, 0) + 1
                if isinstance(cause, DataError) or attempts[record.index] >= config.max_attempts:
                    summary.failed[record.index] = (
                        str(cause) if isinstance(cause, DataError) else short_error(exc)
                    )
                else:
                    queue.append(record)
                continue
            summary.shards_done += 1
            summary.images += images
            summary.busy_s += seconds
            summary.clip_s += clip_seconds
            bar.advance(images)
    finally:
        bar.close()
        pool.shutdown()


class _Bar:
    """A rich progress bar on stderr, on a terminal only: shards, images, images/s."""

    def __init__(self, shards: int, images: int, enabled: bool):
        self.images = 0
        self.progress = Progress(
            TextColumn("[bold]curate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards  {task.fields[images]}/" + str(images) + " images"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled or not sys.stderr.isatty(),
        )
        self.task = self.progress.add_task("shards", total=shards, images=0)
        self.progress.start()

    def advance(self, images: int) -> None:
        self.images += images
        self.progress.update(self.task, advance=1, images=self.images)

    def close(self) -> None:
        self.progress.stop()


def write_rejects_sheet(storage, examples: dict[str, list[tuple[int, str, str]]]) -> str | None:
    """curation_rejects.png: up to SHEET_PER_REASON rejects per reason, a row each, captioned with the
    reason, key and deciding score. Reads only the shards holding them (at most one per example, a
    bounded number whatever the dataset's size), each only until its examples are found."""
    from dppp.trainer.data.transforms import decode_rgb

    if not examples:
        storage.delete(REJECTS_SHEET)  # a sheet from an earlier run would show rejects no longer made
        return None
    wanted: dict[int, set[str]] = {}
    for items in examples.values():
        for shard, key, _ in items:
            wanted.setdefault(shard, set()).add(key)
    images: dict[str, Any] = {}
    for shard, keys in sorted(wanted.items()):
        with storage.open_read(shard_name(shard)) as stream:
            for sample in read_shard(stream, include=READ_IMAGE_EXTS):
                if sample["__key__"] in keys:
                    images[sample["__key__"]] = decode_rgb(sample[image_member(sample)], sample["__key__"])
                    if keys <= images.keys():
                        break
    tiles, captions = [], []
    for reason in sorted(examples):
        row = examples[reason]
        for _shard, key, score in row:
            tiles.append(images[key])
            captions.append(f"{reason} {key} {score}")
        pad = SHEET_PER_REASON - len(row)
        if pad and len(examples) > 1:  # each reason starts a row
            tiles += [Image.new("RGB", images[row[0][1]].size, (255, 255, 255))] * pad
            captions += [""] * pad
    sheet = make_contact_sheet(
        tiles, captions, columns=SHEET_PER_REASON, caption_lines=3, title="dppp curate: rejects by reason"
    )
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    storage.put_bytes(buffer.getvalue(), REJECTS_SHEET)
    return storage.url_for(REJECTS_SHEET)
