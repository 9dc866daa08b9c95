"""Where a dataset's objects are: its storage, and the table of shards `dppp shards ls` prints.

Each function takes a dataset URL (local path, file:// or s3://) and reads only the listing, dataset.json
and the commit records: never a shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from dppp.errors import DataError
from pipeline.records import (
    DATASET_MANIFEST,
    DatasetPlan,
    committed_shards,
    read_dataset_manifest,
    read_dataset_plan,
)
from pipeline.shards import parse_shard_key, shard_name
from pipeline.storage import ObjectInfo, Storage, StorageConfig, open_storage


def open_dataset(url: str, config: StorageConfig | None = None) -> tuple[Storage, list[ObjectInfo]]:
    """The dataset's storage and its object listing; DataError if nothing dppp wrote is there."""
    storage = open_storage(url, config)
    objects = storage.list()
    if not any(o.key == DATASET_MANIFEST or parse_shard_key(o.key) for o in objects):
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


def _plan_of(storage: Storage, present: set[str]) -> DatasetPlan | None:
    """dataset.json's plan, or None when the manifest is absent or records none (raises DataError if invalid)."""
    if DATASET_MANIFEST not in present:
        return None
    return read_dataset_plan(read_dataset_manifest(storage), storage.url_for(DATASET_MANIFEST))


def list_shards(url: str, config: StorageConfig | None = None) -> ShardListing:
    """One row per shard index seen (tar and/or record) or planned by dataset.json, with the record's counts."""
    storage, objects = open_dataset(url, config)
    tars = {}
    records = set()
    for obj in objects:
        parsed = parse_shard_key(obj.key)
        if parsed and parsed[1] == "tar":
            tars[parsed[0]] = obj.size
        elif parsed:
            records.add(parsed[0])
    try:
        plan = _plan_of(storage, {o.key for o in objects})
    except DataError:  # `ls` lists what is there; `verify` reports a broken manifest
        plan = None
    planned = set(range(plan.shards)) if plan else set()
    by_index = {r.index: r for r in committed_shards(storage)}
    rows = []
    for index in sorted(set(tars) | records | planned):
        record = by_index.get(index)
        rows.append(ShardRow(index=index, tar=shard_name(index),
                             samples=record.count if record else None,
                             identities=len(record.pids) if record else None,
                             bytes=tars.get(index), committed=record is not None and index in tars,
                             tar_present=index in tars, record_present=index in records,
                             planned=index in planned if plan else None))  # fmt: skip
    return ShardListing(storage.url, rows, plan.shards if plan else None)
