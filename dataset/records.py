"""What a dataset says about itself: per-shard commit records, and reading and writing dataset.json.

    <root>/dataset.json                 resolved config (secrets stripped), taxonomy hash, versions, plan
                                        (what it holds: dataset/manifest.py)
    <root>/shards/shard-NNNNNN.tar      the samples (dataset/)
    <root>/shards/shard-NNNNNN.parquet  the shard's index rows, its fragment (dataset/index.py)
    <root>/shards/shard-NNNNNN.json     the commit record: count, pids, keys, bytes, sha256, timings, and
                                        the fragment's size, sha256, rows and columns
    <root>/index.parquet                one row per sample, the merge of the fragments (dataset/index.py)

A shard is committed when its record exists (pipeline/publish.py writes it last; dataset/listing.py finds the
committed ones).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationError

from dppp.dataset.format import record_name, shard_name
from dppp.dataset.shard_writer import ShardInfo
from dppp.foundation.errors import DamagedDataError, DataError
from dppp.foundation.redaction import strip_secrets
from dppp.foundation.schema import StrictModel
from dppp.foundation.storage.base import ObjectNotFound, Storage

DATASET_MANIFEST = "dataset.json"
INDEX_NAME = "index.parquet"
RECORD_FORMAT_VERSION = 2  # 2: the record names the shard's index fragment; 1 (no fragment) still reads
ATTRIBUTE_PREFIX = (
    "attr_"  # index columns for attributes, so 'height' (an attribute) never meets a core column
)


class FragmentRef(StrictModel):
    """The shard's index fragment as its record commits it: a fragment that differs is not this shard's."""

    key: str  # shards/shard-NNNNNN.parquet
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int = Field(ge=0)
    columns: list[str]  # its attribute columns (attr_*), sorted: the merge's schema without reading it


class ShardRecord(StrictModel):
    """The commit marker of one shard, and the figures `dppp shards verify` checks the tar against."""

    format_version: int = RECORD_FORMAT_VERSION
    index: int = Field(ge=0)
    tar: str  # key of the tar, relative to the dataset root
    count: int = Field(ge=0)
    pids: list[int]
    keys: list[str]
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    image_format: str | None = None
    timings: dict[str, float] = {}
    fragment: FragmentRef | None = None  # None: committed before fragments existed (the next merge writes it)
    # dataset.json's shard_fingerprint of the config that rendered it; None: committed before records had one
    fingerprint: str | None = None

    @classmethod
    def from_info(
        cls,
        index: int,
        info: ShardInfo,
        timings: dict[str, float] | None = None,
        fragment: FragmentRef | None = None,
        fingerprint: str | None = None,
    ) -> ShardRecord:
        return cls(
            index=index,
            tar=shard_name(index),
            count=info.count,
            pids=list(info.pids),
            keys=list(info.keys),
            bytes=info.bytes,
            sha256=info.sha256,
            image_format=info.image_format,
            timings=timings or {},
            fragment=fragment,
            fingerprint=fingerprint,
        )

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), sort_keys=True, indent=1).encode() + b"\n"


# ----------------------------------------------------------------------------------------- manifest


def write_dataset_manifest(storage: Storage, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write dataset.json (secrets stripped, sorted keys) atomically; returns what was written."""
    clean = strip_secrets(manifest)
    storage.put_bytes(
        json.dumps(clean, sort_keys=True, indent=2, ensure_ascii=False).encode() + b"\n", DATASET_MANIFEST
    )
    return clean


def read_dataset_manifest(storage: Storage) -> dict[str, Any]:
    try:
        data = storage.read_bytes(DATASET_MANIFEST)
    except ObjectNotFound:
        raise DataError(
            f"no {DATASET_MANIFEST} at {storage.url}: not a dppp dataset (or not generated yet)"
        ) from None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise DataError(f"{storage.url_for(DATASET_MANIFEST)} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{storage.url_for(DATASET_MANIFEST)} must hold a JSON object")
    return manifest


class DatasetPlan(StrictModel):
    """The part of dataset.json's `plan` (dataset/manifest.py) that readers check against:
    how many shards the dataset must have, and (when stated) how many samples and identities in all."""

    shards: int = Field(ge=0)
    images: int | None = Field(None, ge=0)
    identities: int | None = Field(None, ge=0)


def read_dataset_plan(manifest: dict[str, Any], where: str) -> DatasetPlan | None:
    """The manifest's plan; None when it records none (a dataset not made by `dppp generate`)."""
    plan = manifest.get("plan")
    if plan is None:
        return None
    if not isinstance(plan, dict):
        raise DataError(f"{where}: 'plan' must be an object")
    known = {
        name: plan[name] for name in DatasetPlan.model_fields if name in plan
    }  # other keys are the generator's
    try:
        return DatasetPlan.model_validate(known)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DataError(
            f"{where}: invalid plan ({'.'.join(map(str, first['loc']))}: {first['msg']})"
        ) from None


# ------------------------------------------------------------------------------------------ records


def parse_record(data: bytes, where: str) -> ShardRecord:
    try:
        return ShardRecord.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise DataError(f"{where}: invalid shard record ({path}: {first['msg']})") from None


def read_record(storage: Storage, index: int) -> ShardRecord | None:
    """Shard `index`'s record, None when it has none; DataError if it is malformed or not its own."""
    try:
        data = storage.read_bytes(record_name(index))
    except ObjectNotFound:
        return None
    record = parse_record(data, storage.url_for(record_name(index)))
    if record.index != index:
        raise DataError(f"{storage.url_for(record_name(index))}: record says index {record.index}")
    return record


# -------------------------------------------------------------------------------------------- index


def read_index(storage: Storage):
    """index.parquet as a pyarrow.Table; DataError if it is missing, DamagedDataError if it is not Parquet."""
    try:
        data = storage.read_bytes(INDEX_NAME)
    except ObjectNotFound:
        raise DataError(
            f"no {INDEX_NAME} at {storage.url}: build it with `dppp shards index {storage.url}`"
        ) from None
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:  # pyarrow raises several types for a damaged file
        raise DamagedDataError(
            f"{storage.url_for(INDEX_NAME)} is not a readable Parquet file ({type(exc).__name__}): rebuild it "
            f"with `dppp shards index {storage.url}`"
        ) from None
