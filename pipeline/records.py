"""What a dataset says about itself: per-shard commit records, dataset.json and index.parquet.

    <root>/dataset.json                 resolved config (secrets stripped), taxonomy hash, versions, plan
    <root>/shards/shard-NNNNNN.tar      the samples (pipeline/shards.py)
    <root>/shards/shard-NNNNNN.json     the commit record: count, pids, keys, bytes, sha256, timings
    <root>/index.parquet                one row per sample, derived from the shards, rebuildable any time

A shard is committed when its record exists. `publish_shard` writes the record only after the tar is
published whole and its size checked, and removes a stale record before overwriting a tar, so a reader that
trusts records never sees a shard that is not whole.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import Field, ValidationError

from dppp.errors import DataError
from dppp.schema import StrictModel
from pipeline.shards import ShardInfo, parse_shard_key, read_shard, record_name, shard_name
from pipeline.storage import Storage, StorageError, redact_url

DATASET_MANIFEST = "dataset.json"
INDEX_NAME = "index.parquet"
RECORD_FORMAT_VERSION = 1
ATTRIBUTE_PREFIX = "attr_"  # index columns for attributes, so 'height' (an attribute) never meets a core column


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

    @classmethod
    def from_info(cls, index: int, info: ShardInfo, timings: dict[str, float] | None = None) -> ShardRecord:
        return cls(index=index, tar=shard_name(index), count=info.count, pids=list(info.pids),
                   keys=list(info.keys), bytes=info.bytes, sha256=info.sha256,
                   image_format=info.image_format, timings=timings or {})  # fmt: skip

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), sort_keys=True, indent=1).encode() + b"\n"


# ------------------------------------------------------------------------------------------- secrets

# A key is secret when its last word(s) name a credential: 'aws_secret_access_key', 'password', 'hf_token'.
# Not 'max_tokens' or 'tokenizer': those are ordinary settings.
_SECRET_KEY = re.compile(
    r"(^|_)(secret|secrets|password|passwd|credential|credentials|api_?key|access_key|access_key_id|"
    r"secret_key|secret_access_key|private_key|session_token|access_token|auth_token|token)$"
)


@functools.lru_cache(maxsize=4096)  # the same few metadata keys, once per sample: keep the writer fast
def is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY.search(str(name).lower().replace("-", "_")))


def strip_secrets(obj: Any) -> Any:
    """A copy of `obj` without credential-named keys, and with user:password@ removed from URLs."""
    kind = type(obj)
    if kind is dict or isinstance(obj, dict):
        # Plain scalars are returned as they are without a call: this runs once per written sample.
        return {k: (v if type(v) in _SCALARS else strip_secrets(v))
                for k, v in obj.items() if not is_secret_key(k if type(k) is str else str(k))}  # fmt: skip
    if kind in (list, tuple) or isinstance(obj, (list, tuple)):
        return [v if type(v) in _SCALARS else strip_secrets(v) for v in obj]
    if isinstance(obj, str) and "@" in obj and "://" in obj:
        return redact_url(obj)
    return obj


_SCALARS = frozenset({int, float, bool, type(None)})  # str is not here: a URL may carry user:password@


# ----------------------------------------------------------------------------------------- manifest


def write_dataset_manifest(storage: Storage, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write dataset.json (secrets stripped, sorted keys) atomically; returns what was written."""
    clean = strip_secrets(manifest)
    storage.put_bytes(json.dumps(clean, sort_keys=True, indent=2, ensure_ascii=False).encode() + b"\n",
                      DATASET_MANIFEST)  # fmt: skip
    return clean


def read_dataset_manifest(storage: Storage) -> dict[str, Any]:
    from pipeline.storage import ObjectNotFound

    try:
        data = storage.read_bytes(DATASET_MANIFEST)
    except ObjectNotFound:
        raise DataError(f"no {DATASET_MANIFEST} at {storage.url}: not a dppp dataset (or not generated yet)") from None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise DataError(f"{storage.url_for(DATASET_MANIFEST)} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{storage.url_for(DATASET_MANIFEST)} must hold a JSON object")
    return manifest


class DatasetPlan(StrictModel):
    """The part of dataset.json's `plan` (pipeline/generate.py `Plan.manifest()`) that readers check against:
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
    known = {name: plan[name] for name in DatasetPlan.model_fields if name in plan}  # other keys are the generator's
    try:
        return DatasetPlan.model_validate(known)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DataError(f"{where}: invalid plan ({'.'.join(map(str, first['loc']))}: {first['msg']})") from None


# ------------------------------------------------------------------------------------------ records


def parse_record(data: bytes, where: str) -> ShardRecord:
    try:
        return ShardRecord.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise DataError(f"{where}: invalid shard record ({path}: {first['msg']})") from None


def read_record(storage: Storage, index: int) -> ShardRecord | None:
    from pipeline.storage import ObjectNotFound

    try:
        data = storage.read_bytes(record_name(index))
    except ObjectNotFound:
        return None
    record = parse_record(data, storage.url_for(record_name(index)))
    if record.index != index:
        raise DataError(f"{storage.url_for(record_name(index))}: record says index {record.index}")
    return record


def read_many(storage: Storage, keys: list[str], threads: int = 16) -> list[bytes]:
    """Read small objects concurrently: a thousand records from S3 one GET at a time would take minutes."""
    if len(keys) <= 1:
        return [storage.read_bytes(key) for key in keys]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(keys))) as pool:
        return list(pool.map(storage.read_bytes, keys))


def committed_shards(storage: Storage) -> list[ShardRecord]:
    """The records of every committed shard, by index. A malformed record is a DataError naming it."""
    keys = [obj.key for obj in storage.list("shards/") if (parse_shard_key(obj.key) or (0, ""))[1] == "json"]
    records = []
    for key, data in zip(keys, read_many(storage, keys), strict=True):
        record = parse_record(data, storage.url_for(key))
        if record.index != parse_shard_key(key)[0]:
            raise DataError(f"{storage.url_for(key)}: record says index {record.index}")
        records.append(record)
    return sorted(records, key=lambda r: r.index)


def publish_shard(storage: Storage, index: int, tar_path, info: ShardInfo,
                  timings: dict[str, float] | None = None,
                  progress: Callable[[int], None] | None = None) -> ShardRecord:  # fmt: skip
    """Publish a written shard and commit it: (old record removed) -> tar -> size check -> record.

    If anything fails before the record is written, the shard stays uncommitted (a resumed run redoes it)."""
    size = os.path.getsize(tar_path)
    if size != info.bytes:  # the file changed since it was written: its record would lie
        raise StorageError(f"{tar_path}: {size} bytes on disk but {info.bytes} written; shard {index} not published")
    storage.delete(record_name(index))  # un-commit first: the tar below may replace a committed one
    started = time.perf_counter()
    # put_file is atomic and raises unless the whole object landed (S3: a successful PUT / completed
    # multipart upload is strongly consistent), so no read-back is needed before the record.
    storage.put_file(tar_path, shard_name(index), progress=progress)
    record = ShardRecord.from_info(index, info, {**(timings or {}), "publish_s": time.perf_counter() - started})
    storage.put_bytes(record.to_json(), record_name(index))
    return record


# -------------------------------------------------------------------------------------------- index

CORE_COLUMNS = ("key", "shard", "pid", "view", "camid", "image_format", "prompt", "negative_prompt",
                "seed", "identity_seed")  # fmt: skip


def index_rows(storage: Storage, record: ShardRecord) -> list[dict[str, Any]]:
    """One row per sample of a committed shard, streamed from its json members (images are not read)."""
    rows = []
    with storage.open_read(record.tar) as stream:
        samples = list(read_shard(stream, include={"json", "cls"}))
    for sample in samples:
        meta = sample.get("json")
        if meta is None:
            raise DataError(f"{storage.url_for(record.tar)}: sample {sample['__key__']} has no json member")
        row = {
            "key": sample["__key__"],
            "shard": record.index,
            "pid": sample.get("cls", meta.get("pid")),
            "view": meta.get("view"),
            "camid": meta.get("camid"),
            "image_format": record.image_format,
            "prompt": meta.get("prompt"),
            "negative_prompt": meta.get("negative_prompt"),
            "seed": meta.get("seed"),
            "identity_seed": meta.get("identity_seed"),
        }
        for name, value in (meta.get("attributes") or {}).items():
            # Attribute values are labels; text keeps one column type even if a taxonomy mixes kinds.
            row[ATTRIBUTE_PREFIX + name] = None if value is None else str(value)
        rows.append(row)
    return rows


def build_index(storage: Storage, records: Iterable[ShardRecord] | None = None,
                progress: Callable[[ShardRecord], None] | None = None):  # fmt: skip
    """The index as a pyarrow.Table: one row per sample of every committed shard, sorted by key."""
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    for record in committed_shards(storage) if records is None else records:
        rows.extend(index_rows(storage, record))
        if progress:
            progress(record)
    rows.sort(key=lambda r: r["key"])
    attributes = sorted({name for row in rows for name in row if name.startswith(ATTRIBUTE_PREFIX)})
    schema = pa.schema(
        [("key", pa.string()), ("shard", pa.int32()), ("pid", pa.int64()), ("view", pa.int32()),
         ("camid", pa.int32()), ("image_format", pa.string()), ("prompt", pa.string()),
         ("negative_prompt", pa.string()), ("seed", pa.int64()), ("identity_seed", pa.int64())]
        + [(name, pa.string()) for name in attributes]
    )  # fmt: skip
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def write_index(storage: Storage, progress: Callable[[ShardRecord], None] | None = None) -> int:
    """Rebuild index.parquet from the committed shards (atomic publish); returns the number of rows."""
    import pyarrow.parquet as pq

    table = build_index(storage, progress=progress)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    storage.put_bytes(buffer.getvalue(), INDEX_NAME)
    return table.num_rows


def read_index(storage: Storage):
    """index.parquet as a pyarrow.Table; DataError if it is missing."""
    import pyarrow.parquet as pq

    from pipeline.storage import ObjectNotFound

    try:
        data = storage.read_bytes(INDEX_NAME)
    except ObjectNotFound:
        raise DataError(f"no {INDEX_NAME} at {storage.url}: build it with `dppp shards index {storage.url}`") from None
    return pq.read_table(io.BytesIO(data))
