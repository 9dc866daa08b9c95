"""What a dataset holds, from its object listing: per shard, which of tar, fragment and record exist
(`list_objects`), which shards are committed (and their records), and the table `dppp shards ls` prints.

Only the listing, dataset.json and the commit records are read: never a shard. On S3 the listing runs in
key ranges on several threads (one round trip per 1,000 keys each), and what is kept per shard is three
sizes, so memory stays flat in the number of shards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dppp.dataset.format import parse_lease_key, parse_shard_key, shard_name
from dppp.dataset.limits import ShardStorageConfig
from dppp.dataset.records import (
    DATASET_MANIFEST,
    DatasetPlan,
    ShardRecord,
    read_dataset_manifest,
    read_dataset_plan,
    read_record,
)
from dppp.foundation.errors import DamagedDataError, DataError
from dppp.foundation.parallel import IO_THREADS, ordered_map
from dppp.foundation.storage.base import ObjectInfo, Storage
from dppp.foundation.storage.urls import open_storage

SHARDS_PER_RANGE = 1000  # shards (3,000 keys, 3 list pages) per key range of a concurrent S3 listing


@dataclass(slots=True)
class ShardObjects:
    """Sizes of one shard's objects; None where the object does not exist."""

    tar: int | None = None
    record: int | None = None
    fragment: int | None = None


_SLOT = {"tar": "tar", "json": "record", "parquet": "fragment"}


@dataclass
class DatasetObjects:
    url: str
    shards: dict[int, ShardObjects]  # shard index -> its objects
    others: dict[str, int]  # every other key (dataset.json, index.parquet, strays) -> size
    # shard index -> size of its lease object: a job renders it now, or died doing so (pipeline/leases.py)
    leases: dict[int, int] = field(default_factory=dict)

    def committed(self) -> list[int]:
        """Indices of the shards with a commit record, in order."""
        return sorted(index for index, objects in self.shards.items() if objects.record is not None)

    def merge(self, other: DatasetObjects) -> None:
        """Take in another listing's objects (a key range cut at shard names holds whole shards; a shard
        split between ranges anyway is joined)."""
        self.others.update(other.others)
        self.leases.update(other.leases)
        for index, objects in other.shards.items():
            mine = self.shards.setdefault(index, objects)
            if mine is not objects:
                for slot in ("tar", "record", "fragment"):
                    if getattr(objects, slot) is not None:
                        setattr(mine, slot, getattr(objects, slot))

    def add(self, obj: ObjectInfo) -> None:
        parsed = parse_shard_key(obj.key)
        if parsed is None:
            leased = parse_lease_key(obj.key)
            if leased is None:
                self.others[obj.key] = obj.size
            else:
                self.leases[leased] = obj.size
            return
        objects = self.shards.get(parsed[0])
        if objects is None:
            objects = self.shards[parsed[0]] = ShardObjects()
        setattr(objects, _SLOT[parsed[1]], obj.size)


def key_ranges(shards_hint: int | None) -> list[tuple[str | None, str | None]]:
    """Disjoint key ranges (after, through] that together cover every key, cut at shard names so that
    each holds about SHARDS_PER_RANGE of `shards_hint` shards; one range without a hint."""
    if not shards_hint or shards_hint <= SHARDS_PER_RANGE:
        return [(None, None)]
    cuts = [f"shards/shard-{i:06d}" for i in range(SHARDS_PER_RANGE, shards_hint, SHARDS_PER_RANGE)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def list_objects(
    storage: Storage,
    *,
    shards_hint: int | None = None,
    threads: int = IO_THREADS,
    progress: Callable[[int], None] | None = None,
) -> DatasetObjects:
    """Every object of the dataset, sorted into shards and others. On storage where a listing can start
    part-way (S3), key ranges sized by `shards_hint` (e.g. the plan's shard count) are listed
    `threads` at a time. `progress(n)` after every n objects listed."""
    listing = DatasetObjects(storage.url, {}, {})
    ranges = key_ranges(shards_hint) if storage.ranged_listing else [(None, None)]
    if len(ranges) == 1:
        # Each object sorted into the listing as it comes: no list of every object is held (300k at 100k
        # shards, ~80 MB as ObjectInfo), and a local walk needs no sort.
        count = 0
        for obj in storage.walk(""):
            listing.add(obj)
            count += 1
            if progress and count % 1000 == 0:
                progress(1000)
        if progress and count % 1000:
            progress(count % 1000)
        return listing

    def walk(bounds: tuple[str | None, str | None]) -> tuple[DatasetObjects, int]:
        """One key range's objects, already sorted into shards: the listing keeps these very objects."""
        after, through = bounds
        part, count = DatasetObjects(storage.url, {}, {}), 0
        for obj in storage.iter_list("", after=after):
            if through is not None and obj.key > through:
                break
            part.add(obj)
            count += 1
        return part, count

    for part, count in ordered_map(walk, ranges, threads=min(threads, len(ranges))):
        listing.merge(part)
        if progress:
            progress(count)
    return listing


def plan_hint(storage: Storage) -> int | None:
    """The plan's shard count from dataset.json, to cut a concurrent listing; None when there is none."""
    if not storage.ranged_listing:
        return None  # a local listing is one directory walk: nothing to cut
    try:
        plan = read_dataset_plan(read_dataset_manifest(storage), DATASET_MANIFEST)
    except DataError:
        return None
    return plan.shards if plan else None


def committed_shards(
    storage: Storage, *, shards_hint: int | None = None, check_tars: bool = False
) -> list[ShardRecord]:
    """The records of every committed shard, by index, read a few at a time. A malformed record is a
    DataError naming it. (Holds every record: callers that only need which shards are committed use
    `committed_indices`.) `check_tars`: what the listing alone shows of each tar (there, and as long as
    its record says) is checked too, a DamagedDataError naming the first few that are not."""
    listing = list_objects(storage, shards_hint=shards_hint)
    indices = [index for index, objects in sorted(listing.shards.items()) if objects.record is not None]
    records = [r for r in ordered_map(lambda i: read_record(storage, i), indices) if r is not None]
    if check_tars:  # (a record read as None: un-committed since the listing)
        _check_listed_tars(storage, records, listing)
    return records


def _check_listed_tars(storage: Storage, records: list[ShardRecord], listing: DatasetObjects) -> None:
    problems = []
    for record in records:
        size = listing.shards[record.index].tar
        if size is None:
            problems.append(f"{record.tar} is missing (its record says {record.bytes} bytes)")
        elif size != record.bytes:
            problems.append(f"{record.tar} is {size} bytes, its record says {record.bytes}")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise DamagedDataError(
            f"{storage.url}: {len(problems)} committed shard(s) damaged: {shown} "
            f"(`dppp shards verify {storage.url}` checks every shard)"
        )


def committed_indices(storage: Storage, *, shards_hint: int | None = None) -> set[int]:
    """Which shards are committed (their record exists), from the listing alone: no record is read."""
    return set(list_objects(storage, shards_hint=shards_hint).committed())


def open_dataset(
    url: str, config: ShardStorageConfig | None = None, progress: Callable[[int], None] | None = None
) -> tuple[Storage, DatasetObjects]:
    """The dataset's storage and its objects; DataError if nothing dppp wrote is there."""
    storage = open_storage(url, config)
    objects = list_objects(storage, shards_hint=plan_hint(storage), progress=progress)
    if DATASET_MANIFEST not in objects.others and not objects.shards:
        raise DataError(f"no dataset at {storage.url}: no {DATASET_MANIFEST} and no shards/shard-*.tar")
    return storage, objects


# ---------------------------------------------------------------------------------------------- ls


@dataclass
class ShardRow:
    index: int
    tar: str
    samples: int | None  # None when there is no record to say
    identities: int | None
    bytes: int | None  # None when the tar is missing
    committed: bool
    tar_present: bool
    record_present: bool = True
    planned: bool | None = None  # None when dataset.json records no plan

    @property
    def state(self) -> str:
        """'yes', 'missing' (planned, neither tar nor record), 'no (tar missing)', 'no' (tar, no record)."""
        if self.committed:
            return "yes"
        if not self.tar_present:
            return "no (tar missing)" if self.record_present else "missing"
        return "no"


@dataclass
class ShardListing:
    url: str
    rows: list[ShardRow]
    planned: int | None = None  # dataset.json's plan.shards; None when it records no plan

    @property
    def committed(self) -> int:
        return sum(r.committed for r in self.rows)

    @property
    def missing(self) -> int:
        """Planned shards with neither tar nor record (never written, or their generation failed)."""
        return sum(r.state == "missing" for r in self.rows)

    @property
    def total_samples(self) -> int:
        return sum(r.samples or 0 for r in self.rows if r.committed)

    @property
    def total_identities(self) -> int:
        return sum(r.identities or 0 for r in self.rows if r.committed)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes or 0 for r in self.rows)


def _plan_of(storage: Storage, present) -> DatasetPlan | None:
    """dataset.json's plan, or None when the manifest is absent or records none (raises DataError if invalid)."""
    if DATASET_MANIFEST not in present:
        return None
    return read_dataset_plan(read_dataset_manifest(storage), storage.url_for(DATASET_MANIFEST))


def list_shards(url: str, config: ShardStorageConfig | None = None) -> ShardListing:
    """One row per shard index seen (tar and/or record) or planned by dataset.json, with the record's counts."""
    storage, objects = open_dataset(url, config)
    try:
        plan = _plan_of(storage, objects.others)
    except DataError:  # `ls` lists what is there; `verify` reports a broken manifest
        plan = None
    planned = set(range(plan.shards)) if plan else set()
    committed = objects.committed()
    counts = {}  # index -> (samples, identities), not the records: they hold every key
    for index, record in zip(
        committed, ordered_map(lambda i: read_record(storage, i), committed), strict=True
    ):
        if record is not None:
            counts[index] = (record.count, len(record.pids))
    rows = []
    absent = ShardObjects()
    for index in sorted(set(objects.shards) | planned):
        present = objects.shards.get(index, absent)
        samples, identities = counts.get(index, (None, None))
        rows.append(
            ShardRow(
                index=index,
                tar=shard_name(index),
                samples=samples,
                identities=identities,
                bytes=present.tar,
                committed=index in counts and present.tar is not None,
                tar_present=present.tar is not None,
                record_present=present.record is not None,
                planned=index in planned if plan else None,
            )
        )
    return ShardListing(storage.url, rows, plan.shards if plan else None)
