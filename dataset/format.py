"""The shard format's names: the member allow-list, the shard key patterns and the object keys (sample keys: dataset/keys.py) of a dataset.

A shard is a plain tar. Each sample is four contiguous members named `<key>.<ext>`:

    p000012_v003.cls    the pid as decimal text
    p000012_v003.jpg    the image (or .png / .webp)
    p000012_v003.json   the full metadata (sorted keys, UTF-8)
    p000012_v003.txt    the prompt

Samples are in key order and members in name order, so the whole tar is in sorted name order. Every entry
has a fixed mtime, uid/gid 0, empty user/group names and mode 0644: the same samples give the same bytes,
whoever writes them and whenever. Stock `webdataset.WebDataset`, `ray.data.read_webdataset` and `tarfile`
read these shards as they are. The writer (dataset/shard_writer.py) and the safe reader
(dataset/shard_reader.py) both build on the constants here.
"""

from __future__ import annotations

import re

from dppp.foundation.errors import DamagedDataError

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: a constant, so a rerun gives byte-identical tars
IMAGE_EXTS = ("jpg", "png", "webp")  # what the writer emits (postprocess.OutputConfig.format)
READ_IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp"})
ALLOWED_EXTS = READ_IMAGE_EXTS | {"json", "txt", "cls"}
SHARD_KEY_RE = re.compile(r"^shards/shard-(\d{6,})\.(tar|json|parquet)$")
LEASE_KEY_RE = re.compile(r"^shards/shard-(\d{6,})\.lease$")


def shard_name(index: int) -> str:
    """The tar's key under the dataset root: shard_name(12) == 'shards/shard-000012.tar'."""
    return f"shards/shard-{index:06d}.tar"


def record_name(index: int) -> str:
    """The commit record's key: record_name(12) == 'shards/shard-000012.json'."""
    return f"shards/shard-{index:06d}.json"


def fragment_name(index: int) -> str:
    """The key of the shard's index fragment (its index rows): fragment_name(12) == 'shards/shard-000012.parquet'."""
    return f"shards/shard-{index:06d}.parquet"


def lease_name(index: int) -> str:
    """The key of the shard's lease while a job renders it (pipeline/leases.py): 'shards/shard-000012.lease'."""
    return f"shards/shard-{index:06d}.lease"


def parse_lease_key(key: str) -> int | None:
    """The shard index of a lease key ('shards/shard-000012.lease' -> 12); None for any other key."""
    match = LEASE_KEY_RE.match(key)
    return int(match.group(1)) if match else None


def parse_shard_key(key: str) -> tuple[int, str] | None:
    """('shards/shard-000012.tar' -> (12, 'tar')); 'json' for a record, 'parquet' for a fragment; None for
    any other key."""
    match = SHARD_KEY_RE.match(key)
    return (int(match.group(1)), match.group(2)) if match else None


class UnsafeShardError(DamagedDataError):
    """A member name that a Re-ID shard never has and that would be unsafe to extract."""
