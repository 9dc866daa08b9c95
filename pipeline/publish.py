"""Publishing a written shard: the commit protocol.

fragment built from the local tar -> (old record removed) -> tar -> fragment -> record. The record is written
only after the tar and the fragment are published whole and the tar's size checked, and a stale record is
removed before a tar is overwritten, so a reader that trusts records never sees a shard (or a fragment) that
is not whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from dppp.dataset.format import fragment_name, record_name, shard_name
from dppp.dataset.index import build_fragment
from dppp.dataset.records import ShardRecord
from dppp.dataset.shard_writer import ShardInfo
from dppp.foundation.storage.base import Storage, StorageError


def discard_partial_shard(storage: Storage, index: int) -> None:
    """Remove what a writer of shard `index` killed mid-write (its actor's node lost, a driver or job
    stopped) left beside the shard's objects: hidden temp files never renamed into place."""
    for key in (shard_name(index), fragment_name(index), record_name(index)):
        storage.discard_partial_writes(key)


def publish_shard(
    storage: Storage,
    index: int,
    tar_path,
    info: ShardInfo,
    timings: dict[str, float] | None = None,
    progress: Callable[[int], None] | None = None,
    fingerprint: str | None = None,
) -> ShardRecord:
    """Publish a written shard and commit it: fragment built from the local tar -> (old record removed)
    -> tar -> fragment -> record (naming the fragment's sha256). If anything fails before the record is
    written, the shard stays uncommitted (a resumed run redoes it). `fingerprint`: the dataset's shard
    fingerprint, carried by the record."""
    size = os.path.getsize(tar_path)
    if size != info.bytes:  # the file changed since it was written: its record would lie
        raise StorageError(
            f"{tar_path}: {size} bytes on disk but {info.bytes} written; shard {index} not published"
        )
    started = time.perf_counter()
    # From the tar on local disk, by the code that indexes any tar: the fragment's rows are the tar's.
    fragment, ref = build_fragment(tar_path, index, info.image_format)
    index_s = time.perf_counter() - started
    discard_partial_shard(storage, index)  # an earlier writer of this shard may have been killed mid-write
    storage.delete(record_name(index))  # un-commit first: the tar below may replace a committed one
    started = time.perf_counter()
    # put_file is atomic and raises unless the whole object landed (S3: a successful PUT / completed
    # multipart upload is strongly consistent), so no read-back is needed before the record.
    storage.put_file(tar_path, shard_name(index), progress=progress)
    timings = {**(timings or {}), "index_s": round(index_s, 4), "publish_s": time.perf_counter() - started}
    storage.put_bytes(fragment, fragment_name(index))
    record = ShardRecord.from_info(index, info, timings, fragment=ref, fingerprint=fingerprint)
    storage.put_bytes(record.to_json(), record_name(index))
    return record
