"""`dppp shards verify`: every committed shard checked against its record (tar and index fragment), and
the dataset against its plan and its index. One shard's checks are pipeline/verify_shard.py.

Shards are verified a window at a time (threads for S3 round trips, or processes with `--workers`), in
index order; what is kept is running totals, one pid -> shard map (to find split identities) and the
shards that have problems, so memory stays flat in the number of shards. Nothing outside the shard
allow-list is decoded.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pyarrow.parquet as pq

from dppp.dataset.card import CARD_NAME, WIDS_INDEX_NAME
from dppp.dataset.curation import CURATION_NAME, PARTS_PREFIX, REJECTS_SHEET
from dppp.dataset.format import (
    fragment_name,
    record_name,
    shard_name,
)
from dppp.dataset.index import key_digest
from dppp.dataset.limits import MemberLimits, ShardStorageConfig
from dppp.dataset.listing import DatasetObjects, ShardObjects, _plan_of, open_dataset
from dppp.dataset.records import (
    DATASET_MANIFEST,
    INDEX_NAME,
    DatasetPlan,
    read_dataset_manifest,
    read_record,
)
from dppp.foundation.errors import DataError
from dppp.foundation.parallel import IO_THREADS, ordered_map
from dppp.foundation.storage.base import Storage
from dppp.pipeline.verify_shard import Progress, ShardCheck, verify_shard

# `--workers 0` verifies a local dataset this large or larger in one process per CPU (below, starting the
# processes costs more than they save); an object store's always on threads.
PROCESSES_FROM_BYTES = 256 << 20


@dataclass
class VerifyReport:
    url: str
    deep: bool
    checks: list[ShardCheck]  # the objects with problems (a clean shard is only counted)
    dataset_problems: list[str]
    notes: list[str]
    verified: int = 0  # committed shards verified, clean or not
    committed: int = 0  # committed shards listed: what a whole run verifies
    stopped: bool = False  # a stop request (SIGTERM, SIGINT) ended the run before every shard was verified
    samples: int = 0  # samples found in them
    bytes: int = 0  # tar bytes read

    @property
    def ok(self) -> bool:
        return not self.dataset_problems and all(c.status == "ok" for c in self.checks)


@dataclass
class _Facts:
    """What the dataset-level checks need of one verified shard's record."""

    pids: list[int]
    count: int
    keys: int  # key_digest of its keys
    fragment: bool


def _check_committed(
    storage: Storage,
    index: int,
    objects: ShardObjects,
    deep: bool,
    progress: Progress | None,
    limits: MemberLimits,
    fingerprint: str | None = None,
) -> tuple[ShardCheck, _Facts | None]:
    """One committed shard: its record read and checked, then its tar and fragment. `fingerprint`:
    dataset.json's shard fingerprint, which a record that carries one must match."""
    key = record_name(index)
    try:
        record = read_record(storage, index)
        if record is None:
            raise DataError(f"{key} disappeared while verifying")
        if record.tar != shard_name(index):
            raise DataError(f"{key}: record is for shard {record.index} ({record.tar})")
    except DataError as exc:
        bad = ShardCheck(key, index)
        bad.add("corrupted", str(exc))
        return bad, None
    check = verify_shard(
        storage,
        record,
        objects.tar,
        deep=deep,
        progress=progress,
        fragment_size=objects.fragment,
        limits=limits,
    )
    if fingerprint and record.fingerprint and record.fingerprint != fingerprint:
        check.add(
            "foreign",
            f"committed by another config (shard fingerprint {record.fingerprint[:12]}, dataset.json's "
            f"{fingerprint[:12]}): another job wrote over this dataset; `dppp generate --repair` renders it again",
        )
    return check, _Facts(record.pids, record.count, key_digest(record.keys), record.fragment is not None)


_worker_storage: list[Storage] = []  # in a verify worker process: the dataset's storage, set once at start


def _check_in_process(args) -> list[tuple[ShardCheck, _Facts | None]]:
    """A batch of shards, in a worker process: on threads for an object store (round trips overlap within
    the process as they do in one), one at a time on local disk (parsing holds the CPU)."""
    batch, deep, limits, fingerprint = args
    storage = _worker_storage[0]

    def check(item):
        index, objects = item
        return _check_committed(storage, index, objects, deep, None, limits, fingerprint)

    return list(ordered_map(check, batch, threads=IO_THREADS if storage.local_root is None else 1))


class _Totals:
    """Running totals over the verified shards, in index order."""

    def __init__(self, plan: DatasetPlan | None):
        self.plan = plan
        self.owners: dict[int, int] = {}  # pid -> first shard holding it
        self.split: dict[int, list[int]] = {}  # pid -> every shard holding it, when more than one
        self.keys = 0  # key_digest of every committed key
        self.count = 0
        self.planned_samples = 0
        self.planned_committed = 0
        self.legacy = 0  # records without a fragment

    def add(self, index: int, facts: _Facts) -> None:
        for pid in facts.pids:
            owner = self.owners.setdefault(pid, index)
            if owner != index:
                self.split.setdefault(pid, [owner]).append(index)
        self.keys = (self.keys + facts.keys) % (1 << 64)
        self.count += facts.count
        self.legacy += not facts.fragment
        if self.plan and index < self.plan.shards:
            self.planned_samples += facts.count
            self.planned_committed += 1


def verify_dataset(
    url: str,
    *,
    deep: bool = False,
    config: ShardStorageConfig | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
    workers: int = 1,
    threads: int = IO_THREADS,
    listed: Progress | None = None,
    stop=None,
) -> VerifyReport:
    """Verify every committed shard (tar and index fragment) against its record, flag uncommitted objects
    and strays, hold the dataset against dataset.json's plan, check the index.

    Shards go `threads` at a time on threads (their S3 round trips overlap), or, with `workers` > 1, that
    many at a time in separate processes (tar parsing is CPU-bound Python); progress then advances a
    whole shard at a time. 0 picks by storage: on an object store threads (a shard's time there is mostly
    waiting on round trips, which threads overlap by the dozen; a process per CPU overlapped only as many,
    and was 6x slower than one process on 2,200 small shards); on local storage one process per CPU for
    datasets of 256 MiB and more (below that, starting processes costs more than it saves). `listed(n)`
    counts objects as they are listed.
    `stop` (foundation/graceful_stop.StopRequest): once requested, the shards in flight finish and the
    report comes back with `stopped` set."""
    storage, objects = open_dataset(url, config, progress=listed)
    report = VerifyReport(storage.url, deep, [], [], [])
    plan, fingerprint = None, None
    if DATASET_MANIFEST not in objects.others:
        report.dataset_problems.append(f"{DATASET_MANIFEST} is missing")
    else:
        try:
            plan = _plan_of(storage, objects.others)
            fingerprint = read_dataset_manifest(storage).get("shard_fingerprint")
        except DataError as exc:
            report.dataset_problems.append(str(exc))
        else:
            if plan is None:
                report.notes.append(
                    f"{DATASET_MANIFEST} records no plan: shards that were never written cannot be detected"
                )
    committed = objects.committed()
    report.committed = len(committed)
    total = sum(objects.shards[index].tar or 0 for index in committed)
    if on_total:
        on_total(total)
    if workers == 0:
        local = storage.local_root is not None
        workers = (os.cpu_count() or 1) if local and total >= PROCESSES_FROM_BYTES else 1
    totals = _Totals(plan)
    limits = (config or ShardStorageConfig()).member_limits
    for check, facts in _verify_all(
        storage, objects, committed, deep, progress, workers, threads, limits, fingerprint
    ):
        if stop is not None and stop.requested:  # leaving the loop cancels what was not started
            report.stopped = True
            return report
        report.verified += 1
        report.samples += check.samples
        report.bytes += check.bytes
        if facts is not None:
            totals.add(check.index, facts)
        _keep(report, check, plan)
    _check_uncommitted(report, objects, plan)
    if plan is not None:
        report.dataset_problems.extend(_check_plan(plan, totals))
    report.checks.sort(key=lambda c: (c.index is None, c.index if c.index is not None else 0, c.name))
    if totals.split:  # P x K batching and resume need every identity whole in one shard
        shown = ", ".join(f"pid {pid} in shards {shards}" for pid, shards in sorted(totals.split.items())[:5])
        report.dataset_problems.append(f"{len(totals.split)} identities split across shards: {shown}")
    if totals.legacy:
        report.notes.append(
            f"{totals.legacy} committed shard(s) have no index fragment (committed before "
            f"fragments existed): `dppp shards index {storage.url}` writes them"
        )
    report.notes.extend(_check_index(storage, objects, totals))
    report.notes.extend(_check_wids_index(storage, objects, totals))
    return report


def _keep(report: VerifyReport, check: ShardCheck, plan: DatasetPlan | None) -> None:
    """Keep a check that has problems (one beyond the plan is `extra`); a clean shard is only counted."""
    if plan is not None and check.index is not None and check.index >= plan.shards:
        check.add("extra", f"shard {check.index} lies beyond the plan's {plan.shards} shards (dataset.json)")
    if check.problems:
        report.checks.append(check)


def _check_uncommitted(report: VerifyReport, objects: DatasetObjects, plan: DatasetPlan | None) -> None:
    """Objects without a commit record, stray objects, and planned shards with nothing at all."""
    for index, present in objects.shards.items():
        if present.record is not None:
            continue
        if present.tar is not None:
            check = ShardCheck(shard_name(index), index, bytes=present.tar)
            check.add("uncommitted", "tar without a commit record (an interrupted run; a resume rewrites it)")
        else:
            check = ShardCheck(fragment_name(index), index, bytes=present.fragment or 0)
            check.add(
                "uncommitted",
                "index fragment without a commit record (an interrupted run; a resume rewrites it)",
            )
        _keep(report, check, plan)
    for key, size in objects.others.items():
        if key not in (
            DATASET_MANIFEST,
            INDEX_NAME,
            CARD_NAME,
            WIDS_INDEX_NAME,
            CURATION_NAME,
            REJECTS_SHEET,
        ) and (
            not key.startswith(PARTS_PREFIX)  # `dppp curate`'s per-shard results (docs/curation.md)
        ):
            check = ShardCheck(key, None, bytes=size)
            check.add("extra", "stray object that is not part of the dataset")
            report.checks.append(check)
    if plan is None:
        return
    for index in range(plan.shards):
        if index not in objects.shards:
            check = ShardCheck(shard_name(index), index)
            check.add(
                "missing",
                f"in dataset.json's plan ({plan.shards} shards) but neither tar nor commit "
                "record exists: never written or failed; a resumed `dppp generate` writes it",
            )
            report.checks.append(check)


def _check_plan(plan: DatasetPlan, totals: _Totals) -> list[str]:
    """Once every planned shard is committed, their samples and identities must add up to the plan's (the
    planned shards that are not there are reported per shard, as missing)."""
    if totals.planned_committed < plan.shards:
        return []
    problems = []
    if plan.images is not None and totals.planned_samples != plan.images:
        problems.append(
            f"the committed shards hold {totals.planned_samples} samples, dataset.json's plan {plan.images}"
        )
    identities = sum(owner < plan.shards for owner in totals.owners.values())
    if plan.identities is not None and identities != plan.identities:
        problems.append(
            f"the committed shards hold {identities} identities, dataset.json's plan {plan.identities}"
        )
    return problems


def _verify_all(
    storage,
    objects: DatasetObjects,
    committed: list[int],
    deep,
    progress,
    workers,
    threads,
    limits,
    fingerprint,
):
    """(check, facts) of every committed shard, in index order, a bounded window at a time."""
    if workers <= 1 or len(committed) <= 1:
        return ordered_map(
            lambda index: _check_committed(
                storage, index, objects.shards[index], deep, progress, limits, fingerprint
            ),
            committed,
            threads=threads,
        )
    return _verify_in_processes(storage, objects, committed, deep, progress, workers, limits, fingerprint)


def _verify_in_processes(storage, objects, committed, deep, progress, workers, limits, fingerprint):
    # spawn, not fork: the parent may hold threads (a progress bar, boto3 pools) that fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        min(workers, len(committed)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), storage),
    )
    per_batch = IO_THREADS if storage.local_root is None else 1
    try:
        items = (
            (
                [(index, objects.shards[index]) for index in committed[start : start + per_batch]],
                deep,
                limits,
                fingerprint,
            )
            for start in range(0, len(committed), per_batch)
        )
        for batch in ordered_map(_check_in_process, items, executor=pool, window=2 * workers):
            for check, facts in batch:
                if progress:
                    progress(check.bytes)
                yield check, facts
    except BaseException:
        # Stopped (the caller left the loop on a stop request, an error, the caller gone): the workers end now, not
        # after the shards they hold; verify writes nothing, so nothing is left half-done.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _start_worker(parent: int, storage: Storage) -> None:
    """Run first in each worker process. Keeps `storage` for every shard it verifies: one S3 client per
    process, not one per shard (a client costs a few hundred ms to set up: sent with each shard, it made
    processes 15x slower than threads on small shards). Has Linux send it SIGTERM when its parent dies,
    however it dies (SIGKILL included), so no worker outlives the verify that started it; ends at once if
    the parent is already gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)
    _worker_storage[:] = [storage]
    if hasattr(storage, "client"):  # S3: built once here, not by every thread of the first batch at once
        storage.client  # noqa: B018


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _check_index(storage: Storage, objects: DatasetObjects, totals: _Totals) -> list[str]:
    """The index is derived data: a stale, unreadable or missing one is a note, fixed by `dppp shards
    index`. Its keys are compared with the records' as a count and an order-free digest, streamed."""
    if INDEX_NAME not in objects.others:
        return [f"no {INDEX_NAME} (rebuild with `dppp shards index {storage.url}`)"]
    try:
        count, digest = _index_keys(storage)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        return [
            f"{INDEX_NAME} cannot be read ({type(exc).__name__}): rebuild with `dppp shards index {storage.url}`"
        ]
    if count != totals.count or digest != totals.keys:
        differ = f"{count} rows" if count != totals.count else "its keys differ from the records'"
        return [
            f"{INDEX_NAME} is stale: {differ}, committed shards hold {totals.count} samples "
            f"(rebuild with `dppp shards index {storage.url}`)"
        ]
    return []


def _check_wids_index(storage: Storage, objects: DatasetObjects, totals: _Totals) -> list[str]:
    """The wids shard index (derived, like index.parquet): it must list the committed tars and their
    samples. Missing (a dataset made before it existed) or stale: a note, fixed by `dppp shards index`."""
    rebuild = f"(rebuild with `dppp shards index {storage.url}`)"
    if WIDS_INDEX_NAME not in objects.others:
        return [f"no {WIDS_INDEX_NAME} {rebuild}"]
    try:
        listed = json.loads(storage.read_bytes(WIDS_INDEX_NAME))["shardlist"]
        urls = [entry["url"] for entry in listed]
        samples = sum(int(entry["nsamples"]) for entry in listed)
    except (ValueError, KeyError, TypeError):
        return [f"{WIDS_INDEX_NAME} cannot be read {rebuild}"]
    if urls != [shard_name(index) for index in objects.committed()] or samples != totals.count:
        return [f"{WIDS_INDEX_NAME} is stale: it lists {len(urls)} shards of {samples} samples {rebuild}"]
    return []


def _index_keys(storage: Storage) -> tuple[int, int]:
    """Row count and key_digest of index.parquet, read one row group's keys at a time."""
    with tempfile.TemporaryDirectory(prefix="dppp-verify-") as tmp:
        path = os.path.join(tmp, INDEX_NAME)
        with storage.open_read(INDEX_NAME) as source, open(path, "wb") as local:
            shutil.copyfileobj(source, local, 1 << 20)
        count, digest = 0, 0
        for batch in pq.ParquetFile(path).iter_batches(columns=["key"], batch_size=1 << 16):
            keys = batch.column(0).to_pylist()
            count += len(keys)
            digest = (digest + key_digest(keys)) % (1 << 64)
    return count, digest
