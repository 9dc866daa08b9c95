"""`dppp shards verify`: every committed shard checked against its record, and the dataset against its plan.

Streams one shard at a time (or a few, in processes); decodes nothing outside the shard allow-list.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dppp.errors import DataError
from pipeline.listing import _plan_of, open_dataset
from pipeline.records import (
    DATASET_MANIFEST,
    INDEX_NAME,
    DatasetPlan,
    ShardRecord,
    parse_record,
    read_index,
    read_many,
)
from pipeline.shards import (
    ALLOWED_EXTS,
    READ_IMAGE_EXTS,
    ChunkedReader,
    Member,
    decode_member,
    iter_members,
    parse_shard_key,
    shard_name,
)
from pipeline.storage import Storage, StorageConfig

Progress = Callable[[int], None]  # called with a number of bytes (or items) just processed


# ------------------------------------------------------------------------------------------ verify

# The kinds of problems `verify` reports, worst first: a shard's status is its worst problem.
PROBLEM_KINDS = ("missing", "truncated", "corrupted", "unsafe", "incomplete", "uncommitted", "extra")


@dataclass
class ShardCheck:
    name: str  # the object's key
    index: int | None
    samples: int = 0
    bytes: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)

    def add(self, kind: str, message: str) -> None:
        assert kind in PROBLEM_KINDS, kind
        self.problems.append((kind, message))

    @property
    def status(self) -> str:
        if not self.problems:
            return "ok"
        return min((kind for kind, _ in self.problems), key=PROBLEM_KINDS.index)


@dataclass
class VerifyReport:
    url: str
    deep: bool
    checks: list[ShardCheck]
    dataset_problems: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.dataset_problems and all(c.status == "ok" for c in self.checks)

    @property
    def samples(self) -> int:
        return sum(c.samples for c in self.checks)


class _Digest:
    """sha256 and size of every byte `ChunkedReader` pulls, one chunk at a time (no second read)."""

    def __init__(self, progress: Progress | None):
        self.hash = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def __call__(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)
        if self.progress:
            self.progress(len(chunk))


def verify_shard(storage: Storage, record: ShardRecord, size: int | None, *, deep: bool = False,
                 progress: Progress | None = None) -> ShardCheck:  # fmt: skip
    """Check one committed shard against its record: size, sha256, samples, members, pids; `deep` decodes
    every image too."""
    check = ShardCheck(record.tar, record.index)
    where = storage.url_for(record.tar)
    if size is None:
        check.add("missing", f"{record.tar} is missing (its record says {record.bytes} bytes)")
        return check
    if size < record.bytes:
        check.add("truncated", f"{size} bytes, record says {record.bytes}")
    elif size > record.bytes:
        check.add("corrupted", f"{size} bytes, record says {record.bytes}")
    wanted = ALLOWED_EXTS if deep else frozenset({"json", "cls", "txt"})
    skipped: list[Member] = []
    samples: dict[str, dict[str, Any]] = {}
    digest = _Digest(progress)
    with storage.open_read(record.tar) as raw:
        reader = ChunkedReader(raw, on_chunk=digest)
        try:
            order: list[str] = []
            for member in iter_members(reader, source=where, wanted=wanted, report=skipped.append):
                if member.skipped:
                    continue
                sample = samples.get(member.key)
                if sample is None:
                    sample = samples[member.key] = {}
                    order.append(member.key)
                elif order[-1] != member.key:
                    check.add("corrupted", f"members of sample {member.key} are not contiguous")
                if member.ext in sample:
                    check.add("corrupted", f"sample {member.key} has two {member.ext} members")
                sample[member.ext] = member.data
            reader.drain()
        except DataError as exc:
            kind = "truncated" if size < record.bytes else ("unsafe" if "rejected" in str(exc) else "corrupted")
            check.add(kind, str(exc).removeprefix(f"{where}: "))
            reader.drain()
    check.bytes = digest.size
    check.samples = len(samples)
    if digest.hash.hexdigest() != record.sha256:
        check.add("corrupted", "sha256 differs from the record")
    for member in skipped:
        check.add("unsafe", f"member {member.name!r}: {member.skipped}")
    _check_samples(check, record, samples, deep)
    return check


def _check_samples(check: ShardCheck, record: ShardRecord, samples: dict[str, dict[str, Any]], deep: bool) -> None:
    if len(samples) != record.count:
        check.add("incomplete", f"{len(samples)} samples, record says {record.count}")
    missing = sorted(set(record.keys) - set(samples))
    unexpected = sorted(set(samples) - set(record.keys))
    if missing:
        check.add("incomplete", f"samples missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        check.add("extra", f"samples not in the record: {', '.join(unexpected[:5])}")
    pids = set()
    for key, members in samples.items():
        images = [ext for ext in members if ext in READ_IMAGE_EXTS] if deep else ["(not read)"]
        lacking = [ext for ext in ("json", "txt", "cls") if ext not in members]
        if lacking or not images or (deep and len(images) != 1):
            check.add("incomplete", f"sample {key}: members {sorted(members)}, needs one image + json, txt, cls")
            continue
        try:
            meta = decode_member("json", members["json"], where=key)
            pid = decode_member("cls", members["cls"], where=key)
            decode_member("txt", members["txt"], where=key)
            if deep:
                decode_member(images[0], members[images[0]], decode_images=True, where=key)
        except DataError as exc:
            check.add("corrupted", str(exc))
            continue
        pids.add(pid)
        if meta.get("pid", pid) != pid or meta.get("key", key) != key:
            check.add("corrupted", f"sample {key}: json says key {meta.get('key')!r} pid {meta.get('pid')!r}, cls {pid}")
    if samples and pids != set(record.pids) and not check.problems:
        check.add("incomplete", f"identities {sorted(pids)[:8]} differ from the record's {record.pids[:8]}")


def verify_dataset(url: str, *, deep: bool = False, config: StorageConfig | None = None,
                   progress: Progress | None = None, on_total: Callable[[int], None] | None = None,
                   workers: int = 1) -> VerifyReport:  # fmt: skip
    """Verify every shard against its record, flag uncommitted tars and stray objects, check the index.

    `workers` > 1 verifies that many shards at once in separate processes (tar parsing is CPU-bound
    Python, so threads would not help); progress then advances a whole shard at a time. 0 picks one per
    CPU for datasets of 256 MiB and more (below that, starting processes costs more than it saves)."""
    storage, objects = open_dataset(url, config)
    sizes = {o.key: o.size for o in objects}
    checks: list[ShardCheck] = []
    dataset_problems: list[str] = []
    notes: list[str] = []
    records: list[ShardRecord] = []
    record_keys = [o.key for o in objects if (parse_shard_key(o.key) or (0, ""))[1] == "json"]
    for key, data in zip(record_keys, read_many(storage, record_keys), strict=True):
        index = parse_shard_key(key)[0]
        try:
            record = parse_record(data, key)
            if record.index != index or record.tar != shard_name(index):
                raise DataError(f"{key}: record is for shard {record.index} ({record.tar})")
            records.append(record)
        except DataError as exc:
            bad = ShardCheck(key, index)
            bad.add("corrupted", str(exc))
            checks.append(bad)
    recorded = {r.index for r in records} | {c.index for c in checks}
    total = sum(min(r.bytes, sizes.get(r.tar, 0)) for r in records)
    if on_total:
        on_total(total)
    if workers == 0:
        workers = (os.cpu_count() or 1) if total >= 256 << 20 else 1
    checks.extend(_verify_all(storage, records, sizes, deep, progress, workers))
    for obj in objects:
        parsed = parse_shard_key(obj.key)
        if parsed and parsed[1] == "tar" and parsed[0] not in recorded:
            check = ShardCheck(obj.key, parsed[0], bytes=obj.size)
            check.add("uncommitted", "tar without a commit record (an interrupted run; a resume rewrites it)")
            checks.append(check)
        elif not parsed and obj.key not in (DATASET_MANIFEST, INDEX_NAME):
            check = ShardCheck(obj.key, None, bytes=obj.size)
            check.add("extra", "stray object that is not part of the dataset")
            checks.append(check)
    if DATASET_MANIFEST not in sizes:
        dataset_problems.append(f"{DATASET_MANIFEST} is missing")
    else:
        try:
            plan = _plan_of(storage, set(sizes))
        except DataError as exc:
            dataset_problems.append(str(exc))
        else:
            if plan is None:
                notes.append(f"{DATASET_MANIFEST} records no plan: shards that were never written cannot be detected")
            else:
                dataset_problems.extend(_check_plan(plan, checks, records))
    checks.sort(key=lambda c: (c.index is None, c.index if c.index is not None else 0, c.name))
    owners: dict[int, list[int]] = {}
    for record in records:
        for pid in record.pids:
            owners.setdefault(pid, []).append(record.index)
    split = {pid: shards for pid, shards in owners.items() if len(shards) > 1}
    if split:  # P x K batching and resume need every identity whole in one shard
        shown = ", ".join(f"pid {pid} in shards {shards}" for pid, shards in sorted(split.items())[:5])
        dataset_problems.append(f"{len(split)} identities split across shards: {shown}")
    notes.extend(_check_index(storage, records, sizes))
    return VerifyReport(storage.url, deep, checks, dataset_problems, notes)


def _check_plan(plan: DatasetPlan, checks: list[ShardCheck], records: list[ShardRecord]) -> list[str]:
    """Hold what is there against dataset.json's plan: every planned shard must exist (a shard whose
    generation failed every attempt leaves neither tar nor record, so only the plan can tell it is gone),
    none may lie beyond it, and a fully committed dataset must hold the planned samples and identities."""
    present = {c.index for c in checks if c.index is not None}
    for index in sorted(set(range(plan.shards)) - present):
        check = ShardCheck(shard_name(index), index)
        check.add("missing", f"in dataset.json's plan ({plan.shards} shards) but neither tar nor commit record "
                             "exists: never written or failed; a resumed `dppp generate` writes it")  # fmt: skip
        checks.append(check)
    for check in checks:
        if check.index is not None and check.index >= plan.shards:
            check.add("extra", f"shard {check.index} lies beyond the plan's {plan.shards} shards (dataset.json)")
    committed = {r.index for r in records}
    if not set(range(plan.shards)) <= committed:
        return []  # the missing shards are reported above; totals would only repeat it
    planned = [r for r in records if r.index < plan.shards]
    problems = []
    samples = sum(r.count for r in planned)
    if plan.images is not None and samples != plan.images:
        problems.append(f"the committed shards hold {samples} samples, dataset.json's plan {plan.images}")
    identities = len({pid for r in planned for pid in r.pids})
    if plan.identities is not None and identities != plan.identities:
        problems.append(f"the committed shards hold {identities} identities, dataset.json's plan {plan.identities}")
    return problems


def _verify_one(storage: Storage, record: ShardRecord, size: int | None, deep: bool) -> ShardCheck:
    return verify_shard(storage, record, size, deep=deep)


def _verify_all(storage, records, sizes, deep, progress, workers) -> list[ShardCheck]:
    if workers <= 1 or len(records) <= 1:
        return [verify_shard(storage, r, sizes.get(r.tar), deep=deep, progress=progress) for r in records]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold threads (a progress bar, boto3 pools) that fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(records)), mp_context=context) as pool:
        futures = [pool.submit(_verify_one, storage, r, sizes.get(r.tar), deep) for r in records]
        checks = []
        for future in futures:
            check = future.result()
            if progress:
                progress(check.bytes)
            checks.append(check)
    return checks


def _check_index(storage: Storage, records: list[ShardRecord], sizes: dict[str, int]) -> list[str]:
    """The index is derived data: a stale or missing one is a note, fixed by `dppp shards index`."""
    if INDEX_NAME not in sizes:
        return [f"no {INDEX_NAME} (rebuild with `dppp shards index {storage.url}`)"]
    keys = set(read_index(storage).column("key").to_pylist())
    expected = {key for r in records for key in r.keys}
    if keys != expected:
        return [f"{INDEX_NAME} is stale: {len(keys)} rows, committed shards hold {len(expected)} samples "
                f"(rebuild with `dppp shards index {storage.url}`)"]  # fmt: skip
    return []
