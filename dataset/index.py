"""The index of a dataset: one row per sample, kept per shard (fragments) and merged (index.parquet).

    <root>/shards/shard-NNNNNN.parquet   fragment: the index rows of one shard, written by the worker that
                                         wrote the tar, before the shard's commit record, which holds the
                                         fragment's size, sha256, row count and attribute columns
    <root>/index.parquet                 the merge of the committed shards' fragments

A row is made from a sample's json and cls members only (images are never read), by one function
(`sample_row`) for every path: the worker's fragment (from the tar it just wrote, on local disk), the
rebuild of a fragment from a published tar, `dppp shards verify`. So the driver builds index.parquet from
records and fragments alone, reading no tar, with memory bounded by one row group. Shards committed before
fragments existed get theirs once, from their tars, at the next merge.

Row order: by shard, then by key within a shard. For a dataset made by `dppp generate` (contiguous pid
ranges per shard) with fewer than a million identities that is key order. Readers that need another
order sort (the split of trainer/data/readers.py depends only on the rows as a set).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dppp.dataset.card import write_loading_files
from dppp.dataset.format import ALLOWED_EXTS, fragment_name, record_name
from dppp.dataset.limits import ShardStorageConfig
from dppp.dataset.listing import committed_shards, list_objects, open_dataset
from dppp.dataset.records import ATTRIBUTE_PREFIX, INDEX_NAME, FragmentRef, ShardRecord, read_record
from dppp.dataset.shard_reader import ChunkedReader, read_shard
from dppp.foundation.errors import DamagedDataError, DataError
from dppp.foundation.parallel import IO_THREADS, ordered_map
from dppp.foundation.storage.base import ObjectNotFound, Storage
from dppp.foundation.storage.local import os_errors

log = logging.getLogger("dppp.shards")

ROW_GROUP_ROWS = 1 << 14  # rows held before a row group of index.parquet is written: the merge's memory


def _core_schema():
    return [
        ("key", pa.string()),
        ("shard", pa.int32()),
        ("pid", pa.int64()),
        ("view", pa.int32()),
        ("camid", pa.int32()),
        ("image_format", pa.string()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("seed", pa.int64()),
        ("identity_seed", pa.int64()),
    ]


def index_schema(attributes: Iterable[str]):
    """Core columns, then one string column per attribute column name (`attr_<name>`), sorted."""
    return pa.schema(_core_schema() + [(name, pa.string()) for name in sorted(attributes)])


# ---------------------------------------------------------------------------------------------- rows


def key_digest(keys: Iterable[str]) -> int:
    """An order-free 64-bit digest of a multiset of sample keys (sum of their hashes): records, fragments
    and the index are compared by it in constant memory."""
    total = 0
    for key in keys:
        total += int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return total % (1 << 64)


def sample_row(
    key: str, shard: int, image_format: str | None, meta: dict[str, Any], pid: Any
) -> dict[str, Any]:
    """The index row of one sample, from its decoded json (`meta`) and cls (`pid`, None without one)."""
    row = {
        "key": key,
        "shard": shard,
        "pid": meta.get("pid") if pid is None else pid,
        "view": meta.get("view"),
        "camid": meta.get("camid"),
        "image_format": image_format,
        "prompt": meta.get("prompt"),
        "negative_prompt": meta.get("negative_prompt"),
        "seed": meta.get("seed"),
        "identity_seed": meta.get("identity_seed"),
    }
    for name, value in (meta.get("attributes") or {}).items():
        # Attribute values are labels; text keeps one column type even if a taxonomy mixes kinds.
        row[ATTRIBUTE_PREFIX + name] = None if value is None else str(value)
    return row


def shard_rows(
    stream,
    shard: int,
    image_format: str | None,
    *,
    where: str,
    on_chunk: Callable[[bytes], None] | None = None,
    storage_config: ShardStorageConfig | None = None,
) -> list[dict[str, Any]]:
    """The rows of one shard, streamed from its json/cls members (images are stepped over unread).
    `on_chunk` sees every byte of the tar (a checksum), the end-of-archive padding included;
    `storage_config` gives the member size limits."""
    reader = ChunkedReader(stream, on_chunk=on_chunk)
    rows = []

    def refuse(member) -> None:
        """A member of the sample's own kinds that is no regular file (a link, a device...) leaves its
        sample without what a row promises: never indexed, as verify calls it unsafe. An extra member of
        another kind is stepped over unread, with a warning."""
        if member.ext not in ALLOWED_EXTS:
            log.warning("%s: skipped member %r: %s", where, member.name, member.skipped)
            return
        raise DamagedDataError(
            f"{where}: member {member.name!r}: {member.skipped}; not indexed "
            "(`dppp shards verify` reports it as unsafe)"
        )

    for sample in read_shard(
        reader, include={"json", "cls"}, storage_config=storage_config, name=where, on_skip=refuse
    ):
        meta = sample.get("json")
        if meta is None:
            raise DataError(f"{where}: sample {sample['__key__']} has no json member")
        rows.append(sample_row(sample["__key__"], shard, image_format, meta, sample.get("cls")))
    reader.drain()
    return rows


def index_rows(storage: Storage, record: ShardRecord) -> list[dict[str, Any]]:
    """One row per sample of a committed shard, read from its tar."""
    with storage.open_read(record.tar) as stream:
        return shard_rows(stream, record.index, record.image_format, where=storage.url_for(record.tar))


def rows_table(rows: list[dict[str, Any]]):
    """Rows as a pyarrow.Table: core columns, then the attribute columns present in them, sorted."""
    schema = index_schema({name for row in rows for name in row if name.startswith(ATTRIBUTE_PREFIX)})
    return pa.Table.from_pydict(
        {name: [row.get(name) for row in rows] for name in schema.names}, schema=schema
    )


# ------------------------------------------------------------------------------------------ fragments


def encode_fragment(table) -> bytes:
    """Parquet without statistics or the embedded Arrow schema: neither serves a one-shard file, and
    without them a fragment of 50 columns is half the size and decodes in a third of the time (the
    merge decodes one per shard). The plain Parquet types give back the index's Arrow types."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", write_statistics=False, store_schema=False)
    return buffer.getvalue()


def decode_fragment(data: bytes, where: str):
    """A fragment's bytes as a pyarrow.Table with the index's column types; DataError if it is not one."""
    try:
        # ParquetFile.read, single-threaded: read_table's dataset machinery and thread pool cost more than
        # decoding a fragment of a few rows
        table = pq.ParquetFile(io.BytesIO(data)).read(use_threads=False)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{where}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    attributes = [name for name in table.column_names if name.startswith(ATTRIBUTE_PREFIX)]
    expected = index_schema(attributes)
    if table.schema.remove_metadata() != expected or len(set(table.column_names)) != len(table.column_names):
        raise DataError(f"{where}: columns {table.column_names} are not an index fragment's")
    return table


def fragment_ref(index: int, data: bytes, table) -> FragmentRef:
    return FragmentRef(
        key=fragment_name(index),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        rows=table.num_rows,
        columns=[n for n in table.column_names if n.startswith(ATTRIBUTE_PREFIX)],
    )


def build_fragment(
    tar_path: str | os.PathLike, index: int, image_format: str | None
) -> tuple[bytes, FragmentRef]:
    """A shard's fragment from its local tar (the worker, before publishing): its bytes and its reference."""
    with open(tar_path, "rb") as stream:
        table = rows_table(shard_rows(stream, index, image_format, where=str(tar_path)))
    data = encode_fragment(table)
    return data, fragment_ref(index, data, table)


def rebuild_fragment(
    storage: Storage, record: ShardRecord, storage_config: ShardStorageConfig | None = None
) -> ShardRecord:
    """Write a committed shard's fragment from its published tar (checked against the record's sha256 as
    it streams) and rewrite its record to name the fragment. Returns the new record."""
    digest = hashlib.sha256()
    where = storage.url_for(record.tar)
    with storage.open_read(record.tar) as stream:
        rows = shard_rows(
            stream,
            record.index,
            record.image_format,
            where=where,
            on_chunk=digest.update,
            storage_config=storage_config,
        )
    if digest.hexdigest() != record.sha256:
        raise DataError(
            f"{where}: sha256 differs from its commit record; not indexed "
            f"(`dppp shards verify {storage.url}` shows the damage)"
        )
    table = rows_table(rows)
    data = encode_fragment(table)
    storage.put_bytes(data, fragment_name(record.index))
    updated = record.model_copy(update={"fragment": fragment_ref(record.index, data, table)})
    storage.put_bytes(updated.to_json(), record_name(record.index))  # atomic: the record stays the marker
    return updated


def fetch_fragment(storage: Storage, ref: FragmentRef, index: int) -> bytes:
    """A committed shard's fragment bytes, checked against its record's size and sha256 (the round trip:
    what the merge runs on its threads)."""
    where = storage.url_for(ref.key)
    if ref.key != fragment_name(index):
        raise DataError(
            f"{storage.url_for(record_name(index))}: names fragment {ref.key}, expected {fragment_name(index)}"
        )
    try:
        data = storage.read_bytes(ref.key)
    except ObjectNotFound:
        raise DataError(f"{where} is missing (its commit record names it)") from None
    if len(data) != ref.bytes or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise DataError(
            f"{where}: {len(data)} bytes whose sha256 differs from its commit record's ({ref.bytes} bytes)"
        )
    return data


def check_fragment(data: bytes, ref: FragmentRef, index: int, where: str, *, columns: bool = True):
    """Fetched fragment bytes as a table, checked against its record's rows, shard and, with `columns`,
    attribute columns; DataError if they disagree."""
    table = decode_fragment(data, where)
    names = [n for n in table.column_names if n.startswith(ATTRIBUTE_PREFIX)]
    if table.num_rows != ref.rows or (columns and names != ref.columns):
        raise DataError(
            f"{where}: {table.num_rows} rows, columns {names}; its record says {ref.rows}, {ref.columns}"
        )
    if table.num_rows and set(table.column("shard").to_pylist()) != {index}:
        raise DataError(f"{where}: holds rows of shard(s) {sorted(set(table.column('shard').to_pylist()))}")
    return table


def read_fragment(storage: Storage, ref: FragmentRef, index: int, *, columns: bool = True):
    """A committed shard's fragment, checked against its record's reference (size, sha256, rows, shard
    and, with `columns`, the attribute columns); DataError if they disagree."""
    data = fetch_fragment(storage, ref, index)
    return check_fragment(data, ref, index, storage.url_for(ref.key), columns=columns)


# ---------------------------------------------------------------------------------------------- merge


class _Committed:
    """What the merge keeps of each committed shard's record between its two passes: 64 bytes, not the
    record (whose keys alone are ~20 bytes a sample)."""

    def __init__(self):
        self.indices = array("q")
        self.rows = array("q")
        self.sizes = array("q")
        self.keys = array("Q")  # key_digest of the record's keys
        self.digests = bytearray()  # the fragments' sha256, 32 bytes each
        self.attributes: set[str] = set()

    def add(self, record: ShardRecord) -> None:
        ref = record.fragment
        self.indices.append(record.index)
        self.rows.append(ref.rows)
        self.sizes.append(ref.bytes)
        self.keys.append(key_digest(record.keys))
        self.digests += bytes.fromhex(ref.sha256)
        self.attributes.update(ref.columns)

    def ref(self, i: int) -> tuple[int, FragmentRef, int]:
        index = self.indices[i]
        sha = self.digests[32 * i : 32 * i + 32].hex()
        ref = FragmentRef(
            key=fragment_name(index), bytes=self.sizes[i], sha256=sha, rows=self.rows[i], columns=[]
        )
        return index, ref, self.keys[i]


def write_index(
    storage: Storage,
    *,
    from_tars: bool = False,
    threads: int = IO_THREADS,
    shards_hint: int | None = None,
    listing=None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    storage_config: ShardStorageConfig | None = None,
) -> int:
    """Merge the committed shards' fragments into index.parquet (atomic publish); returns its row count.

    Two passes, each `threads` reads at a time: the records (what each fragment must be, and the union of
    attribute columns), then the fragments, each checked against its record (size, sha256, rows) and
    appended in row groups of ROW_GROUP_ROWS. No tar is read, except to give a shard committed before
    fragments existed its fragment (once), or every shard with `from_tars`. A fragment that disagrees with
    its record is a DataError: never indexed. `listing`: the dataset's objects when the caller has them
    (else listed here, in key ranges cut by `shards_hint`). `progress(1)` per record and per fragment.
    `storage_config` gives the member size limits a tar is read with."""
    listing = listing or list_objects(storage, shards_hint=shards_hint, threads=threads)
    committed = listing.committed()
    if on_total:
        on_total(2 * len(committed))

    def record_of(index: int) -> ShardRecord | None:
        record = read_record(storage, index)
        if record is not None and (from_tars or record.fragment is None):
            return rebuild_fragment(storage, record, storage_config)
        return record

    kept = _Committed()
    for record in ordered_map(record_of, committed, threads=threads):
        if record is not None:  # None: un-committed since the listing (a shard being re-published)
            kept.add(record)
        if progress:
            progress(1)
    schema = index_schema(kept.attributes)

    def fetch(i: int) -> tuple[int, FragmentRef, int, bytes]:
        index, ref, keys = kept.ref(i)
        return index, ref, keys, fetch_fragment(storage, ref, index)

    rows = 0
    with tempfile.TemporaryDirectory(prefix="dppp-index-") as tmp:
        path = os.path.join(tmp, INDEX_NAME)
        # the merge is written here first: a full temporary folder is named, as the dataset's disk would be
        with os_errors("write", path), pq.ParquetWriter(path, schema, compression="zstd") as writer:
            group = _RowGroup(writer, pa)
            # Round trips on the threads, decoding here: Arrow's allocator keeps a heap per thread that
            # decodes, and 16 of them held ~100 MB more at the peak than one does.
            for index, ref, keys, data in ordered_map(fetch, range(len(kept.indices)), threads=threads):
                where = storage.url_for(ref.key)
                # The sha256 ties the fragment to its record, whose columns are in the schema already.
                table = check_fragment(data, ref, index, where, columns=False)
                if key_digest(table.column("key").to_pylist()) != keys:
                    raise DataError(
                        f"{where}: its keys differ from the commit record's; not indexed "
                        f"(`dppp shards verify {storage.url}` shows the damage)"
                    )
                table = _conform(table, schema, pa, where)
                group.add(table)
                rows += table.num_rows
                if progress:
                    progress(1)
            group.flush()
        storage.put_file(path, INDEX_NAME)
    # The dataset card and wids index describe the same committed shards: rewritten with every merge.
    write_loading_files(storage, list(zip(kept.indices, kept.rows, strict=True)))
    return rows


class _RowGroup:
    """Fragments gathered into row groups of ROW_GROUP_ROWS. A small table costs far more memory than its
    rows (buffers per column: ~50 kB for 2 rows of 50 columns), so every COMPACT_TABLES of them are
    copied into one table: memory is bounded by the rows held, not by how many fragments hold them."""

    COMPACT_TABLES = 256

    def __init__(self, writer, pa):
        self.writer, self.pa = writer, pa
        self.compact: list = []
        self.pending: list = []
        self.rows = 0

    def add(self, table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        if len(self.pending) >= self.COMPACT_TABLES:
            self.compact.append(self.pa.concat_tables(self.pending).combine_chunks())
            self.pending = []
        if self.rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(
                self.pa.concat_tables(self.compact + self.pending), row_group_size=self.rows
            )
        self.compact, self.pending, self.rows = [], [], 0


def _conform(table, schema, pa, where: str):
    """A fragment with the index's full schema: attribute columns it lacks are nulls."""
    if table.schema == schema:  # every fragment of a one-taxonomy dataset
        return table
    unknown = set(table.column_names) - set(schema.names)
    if unknown:
        raise DataError(f"{where}: columns {sorted(unknown)} that no commit record names")
    columns = [
        table.column(name) if name in table.column_names else pa.nulls(table.num_rows, pa.string())
        for name in schema.names
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def build_index(storage: Storage, records: Iterable[ShardRecord] | None = None):
    """The index as one pyarrow.Table built from the tars themselves, not the fragments: the reference
    the fragments are tested against, and what `dppp shards index --from-tars` rebuilds them from."""
    tables = [
        rows_table(index_rows(storage, record))
        for record in (committed_shards(storage) if records is None else records)
    ]
    schema = index_schema({n for t in tables for n in t.column_names if n.startswith(ATTRIBUTE_PREFIX)})
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([_conform(table, schema, pa, storage.url) for table in tables])


def rebuild_index(
    url: str,
    config: ShardStorageConfig | None = None,
    *,
    from_tars: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> int:
    """`dppp shards index`: merge the fragments into index.parquet (`from_tars`: rebuild every fragment
    from its tar first); returns the number of rows."""
    storage, listing = open_dataset(url, config)
    return write_index(
        storage,
        from_tars=from_tars,
        listing=listing,
        progress=progress,
        on_total=on_total,
        storage_config=config,
    )
