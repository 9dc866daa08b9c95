"""The shard plan: which identities go into which shard (whole identities only, contiguous pid ranges).

A pure function of (identity count, identities per shard, views per identity), so every process that
builds it (driver, actors, a resumed run) gets the same plan, and `dataset.json` records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ShardPlan:
    index: int
    pids: tuple[int, ...]
    num_images: int
    # The dataset's shard fingerprint (pipeline/generate.py), which the shard's record carries; set by the
    # driver. Not part of what the shard is: two plans of the same shard compare equal.
    fingerprint: str | None = field(default=None, compare=False)


def plan_shards(views_per_pid: Sequence[int], ids_per_shard: int) -> list[ShardPlan]:
    """Cut pids 0..N-1 into consecutive shards of `ids_per_shard` identities (the last may be smaller)."""
    if ids_per_shard < 1:
        raise ValueError("ids_per_shard must be >= 1")
    shards = []
    for index, start in enumerate(range(0, len(views_per_pid), ids_per_shard)):
        pids = tuple(range(start, min(start + ids_per_shard, len(views_per_pid))))
        shards.append(ShardPlan(index, pids, sum(views_per_pid[p] for p in pids)))
    return shards
