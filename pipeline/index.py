"""index.parquet: one row per sample of the committed shards."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.listing import open_dataset
from pipeline.records import ShardRecord, write_index
from pipeline.storage import StorageConfig


def rebuild_index(url: str, config: StorageConfig | None = None,
                  progress: Callable[[ShardRecord], None] | None = None) -> int:  # fmt: skip
    """Rebuild index.parquet from the committed shards; returns its number of rows."""
    storage, _ = open_dataset(url, config)
    return write_index(storage, progress=progress)
