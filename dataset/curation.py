"""The curation file: which samples of a dataset `dppp curate` keeps, and why it rejects the others.

    <root>/curation/<run>/shard-NNNNNN.parquet   one shard's rows, written and committed by a curate worker
    <root>/curation.parquet                      one row per sample: the merge of a run's shard files
    <root>/curation_rejects.png                  a contact sheet of the rejects, by reason

`<run>` is a hash of the dataset's fingerprint and the curation settings (signals, thresholds, model): a
rerun with the same settings finds its finished shards from the listing alone and resumes; other settings
write beside them and never mix. Each row: the shard, key and pid, `keep`, `reason` ('' when kept) and
every signal's score (trainer/curation/ computes them; docs/curation.md explains them).

The merged file's parquet metadata records the dataset it was made for (dataset.json's fingerprint) and
the sha256 of every shard it judged, so a reader refuses a file made for another dataset, or for shards
since re-rendered. This module is part of the dataset contract: `dppp shards stats` (pipeline) and the
trainer's data sources both read curation files through it; it computes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dppp.dataset.listing import list_objects, plan_hint
from dppp.dataset.records import read_dataset_manifest, read_record
from dppp.foundation.errors import DataError, SettingError
from dppp.foundation.parallel import IO_THREADS, ordered_map
from dppp.foundation.storage.base import ObjectNotFound, Storage
from dppp.foundation.storage.urls import split_url

CURATION_NAME = "curation.parquet"
REJECTS_SHEET = "curation_rejects.png"
PARTS_PREFIX = "curation/"
FORMAT = "dppp-curation/1"
METADATA_KEY = b"dppp-curation"
ROW_GROUP_ROWS = 65_536

# Score columns, in file order; what each means is in docs/curation.md.
SCORE_COLUMNS = (
    "contrast",
    "structure",
    "prompt_rank",
    "prompt_margin",
    "identity_consistency",
    "identity_margin",
    "near_duplicate",
)


def schema():
    return pa.schema(
        [
            ("shard", pa.int32()),
            ("key", pa.string()),
            ("pid", pa.int64()),
            ("keep", pa.bool_()),
            ("reason", pa.string()),
            *[(name, pa.float32()) for name in SCORE_COLUMNS],
            ("near_duplicate_pid", pa.int64()),  # -1: no other identity of the shard is that alike
        ]
    )


@dataclass(frozen=True)
class ShardRef:
    """What a curation job keeps of a committed shard's record (not its keys: the worker reads those),
    so that its driver's memory stays small at 100k shards."""

    index: int
    tar: str
    sha256: str
    count: int


def committed_refs(storage: Storage) -> list[ShardRef]:
    """The committed shards, by index: the listing (in key ranges on S3), then each record, a few at a
    time, kept as a ShardRef as it comes."""
    committed = list_objects(storage, shards_hint=plan_hint(storage)).committed()
    return [
        ShardRef(r.index, r.tar, r.sha256, r.count)
        for r in ordered_map(lambda index: read_record(storage, index), committed)
        if r is not None  # un-committed since the listing
    ]


def dataset_fingerprint(manifest: dict[str, Any]) -> str:
    """What identifies a dataset: generate's config fingerprint (it decides every byte), or, for a dataset
    made otherwise, a hash of its whole dataset.json."""
    if isinstance(manifest.get("fingerprint"), str):
        return manifest["fingerprint"]
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def run_id(dataset: str, settings: dict[str, Any]) -> str:
    """The folder of one curation run's shard files: the same dataset and settings, the same folder."""
    canonical = json.dumps({"dataset": dataset, "settings": settings}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def part_name(run: str, index: int) -> str:
    return f"{PARTS_PREFIX}{run}/shard-{index:06d}.parquet"


def part_index(run: str, key: str) -> int | None:
    """part_name's inverse: the shard index of a key in `run`'s folder, None for any other key."""
    prefix = f"{PARTS_PREFIX}{run}/shard-"
    if key.startswith(prefix) and key.endswith(".parquet"):
        digits = key[len(prefix) : -len(".parquet")]
        return int(digits) if digits.isdigit() else None
    return None


def finished_parts(storage: Storage, run: str) -> set[int]:
    """Shards whose file of `run` exists: one listing of the run's folder, no file read."""
    found = (part_index(run, obj.key) for obj in storage.iter_list(f"{PARTS_PREFIX}{run}/"))
    return {index for index in found if index is not None}


def encode_part(table, meta: dict[str, Any]) -> bytes:
    """One shard's rows as parquet bytes, with `meta` (shard, its sha256, dataset, run) in the metadata."""
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _metadata(metadata: dict[bytes, bytes] | None, where: str) -> dict[str, Any]:
    """The curation metadata among a parquet file's key-value metadata."""
    raw = (metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{where}: not a dppp curation file (no {METADATA_KEY.decode()} metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise DataError(f"{where}: its curation metadata is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{where}: not a {FORMAT} file")
    return meta


@dataclass
class Counts:
    samples: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> samples

    def add(self, keep: list[bool], reason: list[str]) -> None:
        self.samples += len(keep)
        self.kept += sum(keep)
        for r, n in Counter(r for k, r in zip(keep, reason, strict=True) if not k).items():
            self.rejected[r] = self.rejected.get(r, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "kept": self.kept, "rejected": dict(sorted(self.rejected.items()))}


# The score that decides each reason, shown beside a reject (the contact sheet).
DECIDING_SCORE = {
    "blank": "contrast",
    "noise": "structure",
    "prompt": "prompt_margin",
    "identity": "identity_consistency",
    "near_duplicate": "near_duplicate",
}


def merge_parts(
    storage: Storage,
    run: str,
    records: list,
    meta: dict[str, Any],
    *,
    threads: int | None = None,
    examples: dict[str, list[tuple[int, str, str]]] | None = None,
    examples_per_reason: int = 8,
) -> Counts:
    """Write curation.parquet from `run`'s shard files, one per committed record (in shard order), each
    checked against its record's sha256; publish atomically. Reads only the small shard files, never a
    tar, a few at a time, and writes row groups as they come: memory flat in the dataset's size.
    `examples` (when given) receives the first `examples_per_reason` rejects of each reason, in shard
    order: (shard, key, its deciding score as text)."""

    def fetch(record):
        key = part_name(run, record.index)
        try:
            data = storage.read_bytes(key)
        except ObjectNotFound:
            raise DataError(f"{storage.url_for(key)} is missing: rerun `dppp curate`") from None
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(
                f"{storage.url_for(key)} cannot be read as parquet: {exc}; delete it and rerun"
            ) from None
        part = _metadata(table.schema.metadata, storage.url_for(key))
        if part.get("shard_sha256") != record.sha256:
            raise DataError(f"{storage.url_for(key)} was made for another version of shard {record.index}")
        return table.replace_schema_metadata(None).cast(schema())

    counts = Counts()
    shards = {str(r.index): r.sha256 for r in records}
    file_meta = {**meta, "format": FORMAT, "run": run, "shards": shards}
    with tempfile.TemporaryDirectory(prefix="dppp-curation-") as tmp:
        path = os.path.join(tmp, CURATION_NAME)
        with pq.ParquetWriter(path, schema(), compression="zstd") as writer:
            for table in ordered_map(fetch, records, threads=threads or IO_THREADS):
                counts.add(table.column("keep").to_pylist(), table.column("reason").to_pylist())
                if examples is not None:
                    _collect_examples(table, examples, examples_per_reason)
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            file_meta["counts"] = counts.as_dict()
            writer.add_key_value_metadata({METADATA_KEY.decode(): json.dumps(file_meta, sort_keys=True)})
        storage.put_file(path, CURATION_NAME)
    return counts


def _collect_examples(table, examples: dict[str, list], limit: int) -> None:
    for row in table.filter(pc.invert(table.column("keep"))).to_pylist():
        bucket = examples.setdefault(row["reason"], [])
        if len(bucket) < limit:
            column = DECIDING_SCORE.get(row["reason"], "")
            score = row.get(column)
            bucket.append(
                (int(row["shard"]), row["key"], f"{column}={score:.2f}" if score is not None else "")
            )


# ----------------------------------------------------------------------------------------- reading


@dataclass
class Curation:
    """A curation file as a reader needs it: where from, the dataset and shards it judged, its rejects."""

    url: str
    dataset: str  # dataset.json fingerprint it was made for
    shards: dict[int, str]  # shard index -> the tar's sha256 it judged
    rejected: dict[int, frozenset[str]]  # shard index -> rejected sample keys
    counts: Counts
    settings: dict[str, Any] = field(default_factory=dict)

    def check_dataset(
        self, manifest: dict[str, Any], where: str, setting: str = "train.data.curation"
    ) -> None:
        """Refuse a file made for another dataset (a UserError naming both)."""
        if self.dataset != dataset_fingerprint(manifest):
            raise SettingError(
                setting,
                f"{self.url} was made for another dataset than {where} (dataset.json fingerprints "
                f"differ); rerun `dppp curate` on it, or set {setting}: off",
            )

    def rejected_in(self, index: int, sha256: str, where: str) -> frozenset[str]:
        """The rejected keys of committed shard `index` (tar sha256 `sha256`); a shard the file has not
        judged, or judged in another version, is refused: the file is older than the dataset."""
        judged = self.shards.get(index)
        if judged != sha256:
            state = "has not judged" if judged is None else "judged another version of"
            raise SettingError(
                "train.data.curation",
                f"{self.url} {state} {where}: the dataset changed since; rerun `dppp curate`",
            )
        return self.rejected.get(index, frozenset())


def read_curation(storage: Storage, key: str = CURATION_NAME, *, rows: bool = True) -> Curation:
    """A curation file (default URL/curation.parquet); with `rows=False` only its metadata (counts,
    dataset, shards): no row is read. DataError if it is missing or not a curation file."""
    where = storage.url_for(key)
    try:
        data = storage.read_bytes(key)
    except ObjectNotFound:
        raise DataError(f"no curation file at {where}: run `dppp curate` first") from None
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        meta = _metadata(parquet.metadata.metadata, where)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{where} cannot be read as parquet: {type(exc).__name__}: {exc}") from None
    counts = Counts(**meta.get("counts", {}))
    rejected: dict[int, set[str]] = {}
    if rows:
        table = parquet.read(columns=["shard", "key", "keep"])
        for shard, sample, keep in zip(
            table.column("shard").to_pylist(),
            table.column("key").to_pylist(),
            table.column("keep").to_pylist(),
            strict=True,
        ):
            if not keep:
                rejected.setdefault(shard, set()).add(sample)
    return Curation(
        where,
        str(meta.get("dataset", "")),
        {int(index): sha for index, sha in (meta.get("shards") or {}).items()},
        {index: frozenset(keys) for index, keys in rejected.items()},
        counts,
        dict(meta.get("settings") or {}),
    )


def resolve_curation(
    choice: str, storage: Storage, storage_config=None, setting: str = "train.data.curation"
) -> Curation | None:
    """`train.data.curation` for the dppp dataset at `storage`: 'off' -> None; 'auto' -> its
    curation.parquet when there is one; else a path or URL of a curation file, which must exist. The file
    is checked against the dataset's dataset.json (a foreign one is refused)."""
    if choice == "off":
        return None
    if choice == "auto":
        if not storage.exists(CURATION_NAME):
            return None
        curation = read_curation(storage)
    else:
        file_storage, key = split_url(choice, storage_config)
        if not file_storage.exists(key):
            raise SettingError(setting, f"no curation file at {file_storage.url_for(key)}")
        curation = read_curation(file_storage, key)
    curation.check_dataset(read_dataset_manifest(storage), storage.url, setting)
    return curation
