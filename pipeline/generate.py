"""`dppp generate`: the Ray batch job that renders identities into committed shards on storage.

The driver builds the plan, writes (or checks) dataset.json, reads which shards are already committed
and hands the rest to a pool of renderer actors (pipeline/worker.py, foundation/actor_pool.py). The shard
is the unit of work, retry and commit: a dead actor (or a dead node's actors) is replaced and its shards
re-queued, the survivors carrying on meanwhile; a shard failing `max_attempts` times is reported and the
job exits 1, every committed shard staying valid. With no actor placed for `placement_timeout_s` the job
stops the same way instead of waiting forever. A rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from dppp.dataset.card import CARD_NAME, WIDS_INDEX_NAME
from dppp.dataset.format import parse_lease_key, parse_shard_key
from dppp.dataset.index import write_index
from dppp.dataset.listing import committed_indices
from dppp.dataset.manifest import dataset_manifest
from dppp.dataset.records import (
    DATASET_MANIFEST,
    INDEX_NAME,
    read_dataset_manifest,
    write_dataset_manifest,
)
from dppp.foundation.actor_pool import ActorLoss, ActorPool, actor_class, short_error
from dppp.foundation.errors import CapacityError, DataError, SettingError
from dppp.foundation.graceful_stop import StopRequest, grace_s, graceful_stop
from dppp.foundation.parallel import ordered_map
from dppp.foundation.ray_cluster import start_ray
from dppp.foundation.storage.base import StorageUnavailable
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.config import RUN_ONLY_FIELDS, GenerateConfig
from dppp.pipeline.dataset_change import plan_change, uncommit
from dppp.pipeline.leases import JobIdentity, LeasedQueue, Leases, ShardQueue
from dppp.pipeline.plan import plan_shards
from dppp.pipeline.progress import GenerateProgress
from dppp.pipeline.prompting import prompt_engine
from dppp.pipeline.publish import discard_partial_shard
from dppp.pipeline.renderers.registry import renderer_kind
from dppp.pipeline.worker import ShardWorker

# ray is imported inside the functions that need it: `dppp generate --dry-run` and `dppp train --dry-run`
# (build_plan) import this module and start no Ray, and must not pay ~0.7 s for it.

_AVG_JPEG_BYTES_PER_PIXEL = 0.46  # measured on the demo (procedural, 256x128, quality 90); --dry-run only


class GenerationFailed(Exception):
    """Some shards failed every attempt, or the cluster had no room left; the committed ones stay valid.
    `summary` says which and why. Not bad input: the CLI exits with `exit_code` (1)."""

    exit_code = 1

    def __init__(self, summary: GenerateSummary):
        super().__init__(summary)
        self.summary = summary


@dataclass
class GenerateSummary:
    out: str
    shards_total: int
    shards_done: int  # rendered by this run
    shards_skipped: int  # already committed before this run
    images: int
    bytes: int
    wall_s: float
    busy: dict[str, float] = field(default_factory=dict)  # worker -> fraction of wall time rendering
    failed: dict[int, str] = field(default_factory=dict)  # shard index -> last error
    retries: int = 0  # shard attempts that failed and were re-queued (dead actors included)
    # (seconds since the pool started, images) at each shard's commit: the steady-state rate without start-up
    timeline: list[tuple[float, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # settings this run measured or reused, for the summary
    # (seconds since the pool started, actors with a loaded renderer) at each change of the pool's size
    pool_sizes: list[tuple[float, int]] = field(default_factory=list)
    losses: list[ActorLoss] = field(default_factory=list)  # actors that died mid-run, and on which node
    stopped: str | None = None  # why the job stopped before every shard was tried (no capacity left)
    outage: bool = False  # stopped because the output storage stayed down for a whole retry budget
    # The driver's own time: "plan_s" (plan, dataset.json, which shards are committed), "schedule_s" (Ray
    # start and the actors' whole run), "index_s" (merging the fragments into index.parquet)
    phases: dict[str, float] = field(default_factory=dict)
    # worker name -> the Ray nodes its shards were rendered on, in order (a replacement may land elsewhere)
    nodes: dict[str, list[str]] = field(default_factory=dict)
    shards_by_others: int = 0  # found committed by another job on the same output during this run

    @property
    def nodes_lost(self) -> list[str]:
        return sorted({loss.node for loss in self.losses if loss.node_dead})

    def steady_images_per_s(self) -> float | None:
        """Images/s between the first and the last commit: what the pool sustains once it is running."""
        if len(self.timeline) < 2 or self.timeline[-1][0] <= self.timeline[0][0]:
            return None
        images = sum(count for _, count in self.timeline[1:])
        return images / (self.timeline[-1][0] - self.timeline[0][0])

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


def config_fingerprint(config: GenerateConfig, taxonomy_hash: str, *, per_shard: bool = False) -> str:
    """A hash of everything that decides the dataset's bytes; a resume must match it. `per_shard`: of
    everything that decides one shard's bytes, which the identity count does not (identities are
    prefix-stable): every shard record carries it, and it survives --extend."""
    decisive = config.model_dump(
        mode="json", exclude=RUN_ONLY_FIELDS | ({"identities"} if per_shard else set())
    )
    canonical = json.dumps({"config": decisive, "taxonomy": taxonomy_hash}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Plan:
    config: GenerateConfig
    engine: Any  # prompts.engine.PromptEngine
    shards: list  # list[ShardPlan]
    fingerprint: str
    shard_fingerprint: str = ""  # config_fingerprint(per_shard=True): what each shard's record carries

    @property
    def images(self) -> int:
        return sum(s.num_images for s in self.shards)

    def estimated_bytes(self) -> int:
        out = self.config.output
        return int(self.images * out.height * out.width * _AVG_JPEG_BYTES_PER_PIXEL)

    def manifest(self) -> dict[str, Any]:
        """dataset.json for this plan (its shape: dataset/manifest.py)."""
        return dataset_manifest(
            config=self.config.model_dump(mode="json"),
            fingerprint=self.fingerprint,
            shard_fingerprint=self.shard_fingerprint,
            taxonomy=self.engine.taxonomy,
            identities=self.config.identities,
            ids_per_shard=self.config.ids_per_shard,
            shards=len(self.shards),
            images=self.images,
        )


def _dataset_object(key: str) -> bool:
    """Whether `key` is one a dppp dataset holds (a shard, record, fragment or lease; a derived file)."""
    return (
        bool(parse_shard_key(key))
        or parse_lease_key(key) is not None
        or key
        in (
            INDEX_NAME,
            CARD_NAME,
            WIDS_INDEX_NAME,
        )
    )


def build_plan(config: GenerateConfig) -> Plan:
    engine = prompt_engine(config)
    views = [
        engine.num_views(pid) for pid in range(config.identities)
    ]  # not identity(): it caches attributes
    shard_fingerprint = config_fingerprint(config, engine.taxonomy_hash, per_shard=True)
    shards = [replace(s, fingerprint=shard_fingerprint) for s in plan_shards(views, config.ids_per_shard)]
    return Plan(config, engine, shards, config_fingerprint(config, engine.taxonomy_hash), shard_fingerprint)


def prepare_output(plan: Plan, *, overwrite: bool, extend: bool = False):
    """Open the output, refuse to mix with another config's dataset, write dataset.json; return storage."""
    storage = open_storage(plan.config.out, plan.config.storage)
    existing = storage.exists(DATASET_MANIFEST)
    manifest = plan.manifest()
    if existing and overwrite:
        doomed = (obj.key for obj in storage.iter_list("shards/") if parse_shard_key(obj.key))
        for _ in ordered_map(storage.delete, doomed):  # a few at a time: one round trip each on S3
            pass
        for derived in (INDEX_NAME, CARD_NAME, WIDS_INDEX_NAME):  # the final merge writes them anew
            storage.delete(derived)
    elif existing:
        previous = read_dataset_manifest(storage)
        if previous.get("fingerprint") != plan.fingerprint and not extend:  # dataset_change checked it
            raise SettingError(
                "overwrite",
                f"{storage.url} holds a dataset generated from another config (or taxonomy); "
                "refusing to mix them (set this to replace it, or write to another generate.out)",
            )
        if previous.get("resolved"):  # settings measured by an earlier run decide this dataset's bytes too
            manifest["resolved"] = previous["resolved"]
    # a user's folder: never write (or delete) among its files (a dataset's own objects, such as a dead
    # job's lease or the shards of a dataset whose dataset.json went, are not the user's)
    elif stray := next((obj for obj in storage.walk() if not _dataset_object(obj.key)), None):
        raise SettingError(
            "generate.out",
            f"{storage.url} is not empty and holds no dataset (no {DATASET_MANIFEST}; it has {stray.key!r}): "
            "refusing to write a dataset among other files; choose an empty or new folder",
        )
    write_dataset_manifest(storage, manifest)
    return storage


RESOLVED_BATCH_SIZE = "generate.renderer.batch_size"


def resolve_batch_size(
    config: GenerateConfig, storage, resources: dict[str, float]
) -> tuple[GenerateConfig, str]:
    """Replace `renderer.batch_size: auto` by the size recorded in dataset.json, or probe it once in a
    worker (and record it there) when no run has yet. Returns the config to run and a note for the
    summary. The recorded size makes a rerun, or another worker, cut the same batches: the same bytes."""
    import ray

    if getattr(config.renderer, "batch_size", None) != "auto":
        return config, ""
    manifest = read_dataset_manifest(storage)
    chosen = manifest.get("resolved", {}).get(RESOLVED_BATCH_SIZE)
    if chosen is not None:
        note = f"renderer batch size {chosen} (batch_size: auto, as recorded in dataset.json)"
    else:
        spawn = _actor_spawner(config, resources, storage.worker_env())
        pool = ActorPool(
            spawn, 1, placement_timeout_s=config.placement_timeout_s, max_starts=config.max_attempts
        )  # one worker, set up as every worker is, then gone
        try:
            while not pool.ready():
                if reason := pool.out_of_capacity():
                    raise CapacityError(f"the batch-size probe (batch_size: auto) could not start: {reason}")
                ready, _ = ray.wait(pool.probes(), num_returns=1, timeout=pool.wait_timeout())
                if ready:
                    pool.settle(ready[0])
            (actor,) = pool.ready().values()
            chosen, description = ray.get(actor.choose_batch_size.remote())
        finally:
            pool.shutdown()
        manifest.setdefault("resolved", {})[RESOLVED_BATCH_SIZE] = chosen
        write_dataset_manifest(storage, manifest)
        note = f"renderer {description}; recorded in dataset.json"
    renderer = config.renderer.model_copy(update={"batch_size": int(chosen)})
    return config.model_copy(update={"renderer": renderer}), note


def _pool_shape(config: GenerateConfig) -> tuple[int, dict[str, float]]:
    """How many actors, and the Ray resources of each: one per GPU for a GPU renderer on a GPU cluster."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if renderer_kind(config.renderer).uses_gpu and gpus > 0:
        return config.workers or gpus, {"num_gpus": 1, "num_cpus": config.cpus_per_worker}
    cpus = int(resources.get("CPU", 1) // config.cpus_per_worker) or 1
    return config.workers or cpus, {"num_cpus": config.cpus_per_worker}


def run_generate(
    config: GenerateConfig,
    *,
    ray_address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    repair: bool = False,
    extend: bool = False,
    progress_every: float | None = None,
) -> GenerateSummary:
    """Render every uncommitted shard of the plan, sharing the work with any other job on the same
    output (shard leases, pipeline/leases.py); write index.parquet at the end. `repair`: render again
    every damaged shard a deep verify finds; `extend`: grow a dataset of fewer identities
    (pipeline/dataset_change.py). On SIGTERM / SIGINT (in the main thread) stop taking shards, let those
    in flight commit for up to DPPP_STOP_GRACE_S, abandon the rest cleanly, release the leases and raise
    Interrupted (foundation/graceful_stop.py). `progress_every`: the interval of the plain progress lines
    when stdout is not a terminal (None: DPPP_PROGRESS_EVERY, 30 s)."""
    with graceful_stop() as stop:
        return _run_generate(
            config, ray_address, overwrite, progress, progress_every, stop, repair=repair, extend=extend
        )


def _run_generate(
    config, ray_address, overwrite, progress, progress_every, stop, *, repair: bool, extend: bool
) -> GenerateSummary:
    started = time.perf_counter()
    plan = build_plan(config)
    job = JobIdentity.current()
    change = plan_change(
        plan,
        open_storage(config.out, config.storage),
        job=job,
        overwrite=overwrite,
        extend=extend,
        repair=repair,
    )
    uncommit(open_storage(config.out, config.storage), change.reopen)  # before dataset.json says the new plan
    storage = prepare_output(plan, overwrite=overwrite, extend=extend)
    # After an --overwrite every shard is leased and its record read: a job that committed an old shard
    # meanwhile is rendered over, never taken for this config's.
    done = set() if overwrite else committed_indices(storage, shards_hint=len(plan.shards))
    todo = [s for s in plan.shards if s.index not in done]
    summary = GenerateSummary(config.out, len(plan.shards), 0, len(plan.shards) - len(todo), 0, 0, 0.0)
    summary.notes += change.lines if change.mode in ("repair", "extend") else []
    summary.phases["plan_s"] = time.perf_counter() - started
    leases = Leases(storage, job, config.lease_ttl_s)
    queue = LeasedQueue(todo, leases, plan.fingerprint, poll_s=min(5.0, config.lease_ttl_s / 4))
    if todo and stop.requested:  # stopped while planning: no Ray, no actor started
        queue.close()
        raise stop.interrupted(_stopped_line(storage, summary, []))
    try:
        _render(config, ray_address, storage, queue, summary, progress, stop, progress_every)
    finally:
        queue.close()
        summary.shards_by_others = len(queue.by_others)
        summary.notes += lease_notes(leases)
    scheduled = time.perf_counter()
    summary.phases["schedule_s"] = scheduled - started - summary.phases["plan_s"]
    # a finished dataset's rerun need not merge again; a storage that is down takes no index (the rerun's)
    if not summary.outage and (todo or change.rewrite_index or not storage.exists(INDEX_NAME)):
        try:
            write_index(storage, shards_hint=len(plan.shards))  # fragments only: no tar is read
        except DataError as exc:  # the output turned read-only or full: the summary still says what was done
            stops = [summary.stopped, f"{INDEX_NAME} not written: {exc}"]
            summary.stopped = "; ".join(stop for stop in stops if stop)
    summary.wall_s = time.perf_counter() - started
    summary.phases["index_s"] = summary.wall_s - (scheduled - started)
    summary.busy = {name: busy / summary.wall_s for name, busy in summary.busy.items()}
    if summary.failed or summary.stopped:
        raise GenerationFailed(summary)
    return summary


def lease_notes(leases) -> list[str]:
    """What the summary says about the leases: dead jobs' shards taken over, leases lost, storage errors."""
    notes = [
        f"took over shard {lease.shard}'s expired lease from {lease.holder()}" for lease in leases.taken_over
    ]
    if leases.lost:
        notes.append(
            f"lost the lease of shard(s) {sorted(leases.lost)} to another job (renewal came after the "
            "expiry): they may have been rendered twice, to the same bytes"
        )
    return notes + leases.errors[:3]


def _render(
    config: GenerateConfig,
    ray_address,
    storage,
    queue,
    summary: GenerateSummary,
    progress,
    stop,
    progress_every,
) -> None:
    """Start Ray and the actor pool and drain `queue` (the shards this job may render) through it; on a
    stop request, Interrupted once the shards in flight have committed or been abandoned."""
    todo = queue.shards
    if todo:
        start_ray(ray_address, (config.workers or 1) * config.cpus_per_worker)
        n_workers, resources = _pool_shape(config)
        config, note = resolve_batch_size(config, storage, resources)
        summary.notes += [note] if note else []
        pool = ActorPool(
            _actor_spawner(config, resources, storage.worker_env()),
            min(n_workers, len(todo)),
            placement_timeout_s=config.placement_timeout_s,
            max_starts=config.max_attempts,
        )
        try:
            abandoned = _drain(pool, queue, config.max_attempts, summary, progress, stop, progress_every)
        finally:
            pool.shutdown()
            summary.pool_sizes, summary.losses = pool.sizes, pool.losses
        if stop.requested and summary.shards_skipped + summary.shards_done < summary.shards_total:
            raise stop.interrupted(_stopped_line(storage, summary, abandoned))


class ShardActor:
    """The Ray actor around a ShardWorker. Its constructor does nothing, so the actor answers a call as
    soon as Ray has placed it; `load()` then builds the renderer (seconds to minutes). The driver thereby
    tells a cluster without room (bounded wait) from a slow model load (foundation/actor_pool.py)."""

    def __init__(self, config: GenerateConfig, *, threads: int | None, name: str):
        self._args, self._worker = (config, threads, name), None

    def load(self) -> str:
        import ray

        config, threads, name = self._args
        self._worker = ShardWorker(config, threads=threads, name=name)
        return ray.get_runtime_context().get_node_id()

    def run(self, plan):
        import ray

        result = self._worker.run(plan)
        result.node = ray.get_runtime_context().get_node_id()
        return result

    def choose_batch_size(self) -> tuple[int, str]:
        return self._worker.choose_batch_size()


def _actor_spawner(config: GenerateConfig, resources: dict[str, float], env: dict[str, str]):
    """A function that starts one ShardActor by worker name, with the pool's resources and environment
    (`env`: what the actors need to reach the output storage, Storage.worker_env)."""
    # Two calls per actor at once: the tar write and upload of one shard overlap the next one's rendering.
    actors, threads = actor_class(ShardActor, resources, env, max_concurrency=2)
    return lambda name: actors.remote(config, threads=threads, name=name)


_DEPTH = 2  # shards in flight per actor: one renders while the previous one is written and uploaded


_POLL_S = 0.5  # the longest wait between looks at a stop request and the progress lines


def _drain(
    pool: ActorPool,
    todo,
    max_attempts: int,
    summary: GenerateSummary,
    progress: bool,
    stop: StopRequest | None = None,
    progress_every: float | None = None,
) -> list:
    """Hand the shards (a list, or a ShardQueue that leases them) to the pool's loaded actors until each
    is committed (by this job or another), has failed `max_attempts` times, or the pool has had no placed
    actor for its placement timeout (summary.stopped says so), or a stop was requested (then the shards in
    flight get the grace period to commit). Returns the shards abandoned in flight."""
    queue = todo if isinstance(todo, ShardQueue) else ShardQueue(todo)
    shards = list(queue.ready)
    images = sum(s.num_images for s in shards)
    with GenerateProgress(
        len(shards), images, enabled=progress, already=summary.shards_skipped, every_s=progress_every
    ) as bar:
        return _Drain(pool, queue, max_attempts, summary, bar, stop or StopRequest()).run()


class _Drain:
    def __init__(
        self, pool: ActorPool, queue, max_attempts: int, summary: GenerateSummary, bar, stop: StopRequest
    ):
        self.pool, self.max_attempts, self.summary, self.bar = pool, max_attempts, summary, bar
        self.stop = stop
        self.queue = queue  # pipeline/leases.py ShardQueue
        self.attempts: dict[int, int] = {}
        self.in_flight: dict[Any, tuple[str, Any, Any]] = {}  # ref -> (worker name, actor, shard plan)
        self.outage_error: BaseException | None = None  # what tripped the breaker (stop_for_outage)

    def run(self) -> list:
        import ray

        while (self.queue or self.in_flight) and not self.summary.outage:
            if self.stop.requested:
                return self.wind_down()
            self.dispatch()
            if not self.in_flight and (reason := self.pool.out_of_capacity()):
                self.summary.stopped = f"{reason}; {len(self.queue)} shard(s) not rendered"
                return []
            # A task in flight always ends (a dead actor's fails once Ray declares the actor dead); the
            # wait is cut into polls only to look at a stop request, shards another job renders and the
            # progress lines.
            bound = None if self.in_flight else self.pool.wait_timeout()
            timeout = _POLL_S if bound is None else min(bound, _POLL_S)
            if (poll := self.queue.wait_s()) is not None:
                timeout = min(timeout, poll)
            waiting = [*self.in_flight, *self.pool.probes()]
            if not waiting:  # only shards leased by other jobs are left
                time.sleep(timeout)
                self.bar.tick()
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=timeout)
            if ready and self.pool.is_probe(ready[0]):
                self.settle(ready[0])
            elif ready:
                self.collect(ready[0])
            self.bar.tick()
        if self.summary.outage:
            self.count_outage()
        return []

    def wind_down(self) -> list:
        """Stop taking shards; book those in flight that finish within the grace period (a second signal
        cuts it short) and return the others, abandoned: the caller kills their actors."""
        import ray

        deadline = time.monotonic() + grace_s()
        while self.in_flight and not self.stop.urgent and (left := deadline - time.monotonic()) > 0:
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=min(left, _POLL_S))
            if ready:
                self.collect(ready[0], retry=False)
        return [shard for _, _, shard in self.in_flight.values()]

    def dispatch(self) -> None:
        """Least-loaded ready actor first, so work spreads before any actor pipelines a second shard."""
        actors = self.pool.ready()
        load = dict.fromkeys(actors, 0)
        for name, actor, _ in self.in_flight.values():
            if actors.get(name) is actor:
                load[name] += 1
        while self.queue and load:
            name = min(load, key=load.__getitem__)
            if load[name] >= _DEPTH:
                return
            try:
                shard = self.queue.take()
            except StorageUnavailable as exc:  # its lease could not be written: the output is down
                self.stop_for_outage(None, exc)
                return
            if shard is None:  # the rest is leased by other jobs
                return
            self.in_flight[actors[name].run.remote(shard)] = (name, actors[name], shard)
            load[name] += 1

    def settle(self, probe) -> None:
        ready, losses = len(self.pool.ready()), len(self.pool.losses)
        self.pool.settle(probe)
        for loss in self.pool.losses[losses:]:
            self.bar.note(
                f"{loss.worker} on node {loss.node[:8]} lost while loading its renderer; "
                "a replacement is requested"
            )
        if self.pool.losses and len(self.pool.ready()) > ready:
            self.bar.note(f"a replacement actor joined: {len(self.pool.ready())} actor(s) rendering")

    def collect(self, ref, *, retry: bool = True) -> None:
        """Book a finished shard task: its commit, or a retry (back to the queue), or its final failure."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        name, actor, shard = self.in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            if isinstance(exc, RayActorError):
                self.actor_lost(name, actor, exc)
            if isinstance(getattr(exc, "cause", None), StorageUnavailable):
                self.stop_for_outage(shard, exc)
            elif retry:
                self.retry_or_fail(shard, exc)
            return
        self.queue.done(shard)
        summary = self.summary
        summary.shards_done += 1
        summary.images += result.record.count
        summary.bytes += result.record.bytes
        summary.busy[result.worker] = summary.busy.get(result.worker, 0.0) + result.render_s
        nodes = summary.nodes.setdefault(result.worker, [])
        if result.node and (not nodes or nodes[-1] != result.node):
            nodes.append(result.node)
        summary.timeline.append((time.monotonic() - self.pool.started, result.record.count))
        self.bar.advance(result.record.count)

    def actor_lost(self, name: str, actor, exc: BaseException) -> None:
        loss = self.pool.lost(name, actor, exc)
        if loss is None:
            return
        loss.shards += 1
        if loss.shards == 1:
            self.bar.note(
                f"{name} on node {loss.node[:8]} lost ({loss.error}): its shards go back to the "
                f"queue, {len(self.pool.ready())} actor(s) carry on, a replacement is requested"
            )

    def stop_for_outage(self, shard, exc: BaseException) -> None:
        """A circuit breaker: the output storage failed one request (a shard's publish, or its lease) for
        a whole retry budget, so every other shard would be rendered only to fail the same way (and
        retried, each retry spending the budget again). Stop at once; a rerun resumes."""
        if not self.summary.outage:
            self.summary.outage, self.outage_error = True, exc

    def count_outage(self) -> None:
        """After the breaker: book the shards in flight that already finished (one may have committed
        before the endpoint went), abandon the rest uncommitted, and say how many were not rendered."""
        import ray

        if self.in_flight:
            ready, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=0)
            for ref in ready:
                self.collect(ref, retry=False)
        summary = self.summary
        by_others = len(getattr(self.queue, "by_others", ()))
        left = summary.shards_total - summary.shards_skipped - summary.shards_done - by_others
        summary.stopped = (
            f"the output storage is unreachable ({short_error(self.outage_error)}); stopped rather than "
            f"render into it, {left} shard(s) not rendered"
        )

    def retry_or_fail(self, shard, exc: BaseException) -> None:
        self.attempts[shard.index] = self.attempts.get(shard.index, 0) + 1
        if self.attempts[shard.index] < self.max_attempts:
            self.summary.retries += 1
            self.queue.append(shard)
        else:
            self.queue.done(shard)
            self.summary.failed[shard.index] = short_error(exc)
            self.bar.fail(shard.index, self.summary.failed[shard.index])


def _stopped_line(storage, summary: GenerateSummary, abandoned: list) -> str:
    """Clean up after the shards abandoned in flight (their actors are gone: a local write cut short
    leaves a hidden temp file) and say where the job stopped, in one line."""
    for shard in abandoned:
        discard_partial_shard(storage, shard.index)
    committed = summary.shards_skipped + summary.shards_done
    if abandoned:  # an abandoned shard may have committed before its actor was killed: the listing knows
        done = committed_indices(storage, shards_hint=summary.shards_total)
        committed = sum(index < summary.shards_total for index in done)
    return f"stopped: {committed} shards committed, {summary.shards_total - committed} left; rerun to resume"
