"""The epoch plan: which units each rank and loader process reads, and the P x K batches it forms from
them, decided up front from the units' identity sizes alone (see trainer/data/__init__.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dppp.foundation.errors import DataError
from dppp.trainer.data.config import DataConfig
from dppp.trainer.data.sources import TrainingData


@dataclass(frozen=True)
class Pick:
    unit: int  # position in the process's unit list
    identity: int  # index in that unit's identities
    images: tuple[int, ...]  # K indices into the identity's members (repeats when it has fewer than K)


@dataclass(frozen=True)
class PlannedBatch:
    ready_after: int  # the process has read its units 0..ready_after when this batch is formed
    picks: tuple[Pick, ...]  # P picks of distinct identities


@dataclass(frozen=True)
class EpochPlan:
    units: tuple[tuple[int, ...], ...]  # per DataLoader process: indices into TrainingData.units
    batches: tuple[tuple[PlannedBatch, ...], ...]  # per process, already trimmed to `steps` in all
    steps: int  # batches this rank (and every rank) runs this epoch


def shards_for_rank(num_units: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This rank's units for the epoch: a (seed, epoch) shuffle of all units cut into `world` equal,
    disjoint slices. The num_units % world left over are skipped this epoch (other ones next epoch)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    per_rank = num_units // world
    if per_rank == 0:
        raise DataError(f"{num_units} shard(s) cannot feed {world} training workers: each needs one at least")
    order = np.random.default_rng([seed, epoch, 0x5348]).permutation(num_units)
    return [int(u) for u in order[rank * per_rank : (rank + 1) * per_rank]]


def plan_process(
    identity_sizes: Sequence[Sequence[int]],
    rng: np.random.Generator,
    ids_per_batch: int,
    images_per_id: int,
    pool_identities: int,
) -> list[PlannedBatch]:
    """The batches one loader process forms from its units, given only each identity's image count.

    Each identity's images are shuffled and cut into chunks of K (an identity with fewer than K images
    gives one chunk drawn with replacement; a remainder smaller than K waits for another epoch). Units
    are read in order into a pool; while the pool holds at least `pool_identities` identities (at the end:
    at least P), a batch takes one chunk from each of the P identities with the most chunks left (random
    among ties), which is the greedy that forms the most batches of P distinct identities."""
    P, K = ids_per_batch, images_per_id
    pool: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    batches = []
    for position, sizes in enumerate(identity_sizes):
        for index, size in enumerate(sizes):
            if size <= 0:
                continue
            if size >= K:
                order = rng.permutation(size)
                pool[(position, index)] = [
                    tuple(int(i) for i in order[c * K : (c + 1) * K]) for c in range(size // K)
                ]
            else:
                pool[(position, index)] = [tuple(int(i) for i in np.sort(rng.choice(size, K, replace=True)))]
        threshold = P if position == len(identity_sizes) - 1 else max(P, pool_identities)
        while len(pool) >= threshold:
            keys = list(pool)
            shuffled = rng.permutation(len(keys))
            chosen = sorted(shuffled, key=lambda j: -len(pool[keys[j]]))[:P]
            picks = []
            for j in sorted(chosen):  # identity order in the batch: the order they entered the pool
                key = keys[j]
                picks.append(Pick(key[0], key[1], pool[key].pop()))
                if not pool[key]:
                    del pool[key]
            batches.append(PlannedBatch(position, tuple(picks)))
    return batches


def round_robin_take(counts: Sequence[int], steps: int, start: int = 0) -> list[int]:
    """How many batches each DataLoader process yields within batches [start, start+steps) of the
    order DataLoader returns them in (round robin over the processes that still have one)."""
    taken, n = [0] * len(counts), 0
    while n < start + steps:
        moved = False
        for w, count in enumerate(counts):
            if taken[w] < count and n < start + steps:
                taken[w] += 1
                n += 1
                moved = True
        if not moved:
            raise ValueError(f"only {sum(counts)} batches, {start + steps} wanted")
    if start:
        before = round_robin_take(counts, start)
        return [t - b for t, b in zip(taken, before, strict=True)]
    return taken


def _rank_batches(data: TrainingData, config: DataConfig, seed: int, epoch: int, rank: int, world: int):
    processes = max(1, config.num_workers)
    mine = shards_for_rank(len(data.units), epoch, seed, rank, world)
    per_process = [tuple(mine[w::processes]) for w in range(processes)]
    pool = config.pool_identities or 2 * config.ids_per_batch
    batches = []
    for w, units in enumerate(per_process):
        sizes = [[len(i.members) for i in data.units[u].identities] for u in units]
        rng = np.random.default_rng([seed, epoch, rank, w, 0x504B])
        batches.append(plan_process(sizes, rng, config.ids_per_batch, config.images_per_id, pool))
    return per_process, batches


def plan_epoch(
    data: TrainingData, config: DataConfig, *, seed: int, epoch: int, rank: int, world: int
) -> EpochPlan:
    """This rank's plan for `epoch`: its units per loader process and their batches, trimmed so that
    every rank runs the same number of steps (the smallest rank's count)."""
    counts = []
    mine = None
    for r in range(world):
        per_process, batches = _rank_batches(data, config, seed, epoch, r, world)
        counts.append(sum(len(b) for b in batches))
        if r == rank:
            mine = (per_process, batches)
    steps = min(counts)
    if steps == 0:
        raise DataError(
            f"epoch {epoch}: a training worker can form no batch of {config.ids_per_batch} identities from "
            f"its share ({len(data.units) // world} of {len(data.units)} units, {data.num_classes} identities, "
            f"{max(1, config.num_workers)} loader process(es) each): lower data.ids_per_batch, "
            "data.num_workers or the number of workers, or add data"
        )
    per_process, batches = mine
    keep = round_robin_take([len(b) for b in batches], steps)
    trimmed = tuple(tuple(b[:n]) for b, n in zip(batches, keep, strict=True))
    return EpochPlan(tuple(per_process), trimmed, steps)
