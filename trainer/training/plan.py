"""`dppp train --dry-run`: what a run will do, planned exactly as the workers will plan it, without Ray.

    plan = plan_run(config, open_training_data(sources, ...), "the committed shards of s3://...")
    plan.steps, plan.phases[1].steps_per_worker

The steps come from the same epoch planner the workers use (`EpochSteps`, trainer/data/plan.py), so
they are what the run will count, per worker and epoch. Data not generated yet can be planned from the
generate section's shard plan (`planned_data`): its units are the planned shards, their identities the
planned view counts, which is all the planner reads. The expected GPU time is trainer/training/capacity.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dppp.dataset.limits import ShardStorageConfig
from dppp.trainer.data.sources import Identity, TrainingData, Unit
from dppp.trainer.methods.registry import method_spec
from dppp.trainer.training.config import TrainConfig
from dppp.trainer.training.steps import EpochSteps, phase_schedule


@dataclass(frozen=True)
class PhasePlan:
    phase: int
    epochs: int
    steps_per_worker: int  # optimiser steps of the phase; every worker runs the same number
    images_per_worker: int  # steps x P x K
    planned_epochs: int  # epochs planned to count them (fewer than `epochs`: the rest extrapolated)

    def steps_per_epoch(self) -> float:
        return self.steps_per_worker / self.epochs if self.epochs else 0.0


@dataclass(frozen=True)
class TrainPlan:
    source: str  # where the plan's data came from, for the reader
    identities: int
    images: int
    units: int
    workers: int
    loader_processes: int  # per worker
    batch_images: int  # P x K
    phases: tuple[PhasePlan, ...]

    @property
    def steps(self) -> int:
        return sum(p.steps_per_worker for p in self.phases)

    def lines(self) -> list[str]:
        out = [
            f"data: {self.source}: {self.identities} identities, {self.images} images in {self.units} units",
            f"{self.workers} worker(s), {self.loader_processes} loader process(es) each, batches of "
            f"{self.batch_images} images; each epoch every worker reads {self.units // self.workers} unit(s)",
        ]
        for p in self.phases:
            counted = (
                ""
                if p.planned_epochs >= p.epochs
                else f" (the mean of {p.planned_epochs} planned epochs, spread over the phase)"
            )
            out.append(
                f"phase {p.phase}: {p.epochs} epochs x {p.steps_per_epoch():.1f} steps{counted} = "
                f"{p.steps_per_worker} steps per worker ({p.images_per_worker} images each, "
                f"{p.images_per_worker * self.workers} in all)"
            )
        out.append(f"the run: {self.steps} optimiser steps")
        return out


def plan_run(
    config: TrainConfig, data: TrainingData, source: str, *, max_planned_epochs: int | None = 6
) -> TrainPlan:
    """The run's steps per phase at `config.workers`, counted by the workers' own planner; DataError
    naming the first planned epoch that forms no batch. Planning an epoch of GenePerson's size takes
    about a second, so a phase longer than `max_planned_epochs` (None: no limit) is counted on that
    many epochs spread over it and extrapolated (epochs differ by their shuffles only)."""
    steps = EpochSteps(data, config, config.workers)
    batch = config.data.ids_per_batch * config.data.images_per_id
    phases = []
    for phase, schedule, first in phase_schedule(config, method_spec(config.model.method).phases):
        epochs = schedule.epochs
        if max_planned_epochs is None or epochs <= max_planned_epochs:
            sample = list(range(epochs))
        else:
            sample = sorted(
                {round(i * (epochs - 1) / (max_planned_epochs - 1)) for i in range(max_planned_epochs)}
            )
        counted = [steps(first + e) for e in sample]
        total = round(sum(counted) * epochs / len(sample)) if sample else 0
        phases.append(PhasePlan(phase, epochs, total, total * batch, len(sample)))
    return TrainPlan(
        source,
        data.num_classes,
        data.num_images,
        len(data.units),
        config.workers,
        max(1, config.data.num_workers),
        batch,
        tuple(phases),
    )


def planned_data(
    views_per_unit: Sequence[Sequence[int]], sources: Sequence[str], storage: ShardStorageConfig
) -> TrainingData:
    """TrainingData of a dataset not yet generated: one unit per planned shard, each identity with its
    planned view count (the planner reads nothing else). No style vocabulary: nothing is read."""
    units, label = [], 0
    for index, views in enumerate(views_per_unit):
        identities = []
        for count in views:
            identities.append(Identity(label, tuple(f"p{label}_v{v}" for v in range(count))))
            label += 1
        units.append(Unit(f"planned shard {index}", None, None, tuple(identities)))
    return TrainingData(tuple(sources), tuple(units), label, {}, storage)
