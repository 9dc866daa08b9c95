"""The pieces of one training step and its schedule, shared by `dppp train` and `dppp pretrain`: the run
position a checkpoint records, the DDP loss wrapper, the learning-rate curve (linear warm-up, cosine
decay), the steps per epoch known up front, and one optimiser step (to device, autocast, backward, step).
The per-worker loop that drives them is trainer/training/loop.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dppp.trainer.data.plan import plan_epoch
from dppp.trainer.data.sources import TrainingData
from dppp.trainer.training.config import TrainConfig


@dataclass
class Position:
    phase: int
    epoch: int  # epoch within the phase
    batch: int  # batches of that epoch already done
    step: int  # global optimiser steps done
    # Batches that epoch's plan had when saved mid-epoch (0: unknown, or saved at an epoch's end). A
    # resume with another worker count or loader-process count plans the epoch afresh: `batch` is then
    # carried over as the same fraction of the new plan (resume_skip).
    epoch_steps: int = 0


@dataclass
class PhaseProgress:
    """One phase's optimiser, schedule and running counts, as the loop's steps update them."""

    phase: int
    schedule: Any  # epochs, lr, weight_decay, warmup_epochs
    optimizer: torch.optim.Optimizer
    wrapped: nn.Module  # the LossModule, in DDP when several ranks
    scaler: Any  # torch.amp.GradScaler
    total: int  # steps of the whole phase, and of its warm-up
    warmup: int
    resume_at: int  # batches of `resume_epoch` already done before this start
    resume_epoch: int
    monitored: set[str]  # loss() parts logged as figures, not as losses
    step_in_phase: int = 0
    done: int = 0  # batches of the current epoch done (its skipped ones included)
    window: dict[str, float] = field(default_factory=dict)  # sums since the last step record
    window_steps: int = 0
    window_images: int = 0
    window_start: float = 0.0
    epoch_sums: dict[str, float] = field(default_factory=dict)

    def lr(self, floor: float) -> float:
        """The learning rate of the next step."""
        return lr_at(self.step_in_phase, self.total, self.warmup, self.schedule.lr, floor)

    def start_epoch(self, skip: int) -> None:
        self.start_window()
        self.epoch_sums = {}
        self.done = skip

    def start_window(self) -> None:
        self.window, self.window_steps, self.window_images = {}, 0, 0
        self.window_start = time.perf_counter()

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], images: int) -> None:
        """Count one step done and add its loss and parts (or monitored figures) to the sums."""
        self.done += 1
        values = {
            "loss": float(loss),
            **{(k if k in self.monitored else f"loss/{k}"): float(v) for k, v in parts.items()},
        }
        for name, value in values.items():
            self.window[name] = self.window.get(name, 0.0) + value
            self.epoch_sums[name] = self.epoch_sums.get(name, 0.0) + value
        self.window_steps += 1
        self.window_images += images


class LossModule(nn.Module):
    """DDP synchronises gradients only for work done through its forward(): this routes model.loss there."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def lr_at(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `base` to `base * floor` at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class EpochSteps:
    """Steps of each global epoch (every rank's count; cached): the schedule's length, known up front."""

    def __init__(self, data: TrainingData, config: TrainConfig, world: int):
        self.data, self.config, self.world = data, config, world
        self.cache: dict[int, int] = {}

    def __call__(self, epoch: int) -> int:
        if epoch not in self.cache:
            plan = plan_epoch(
                self.data, self.config.data, seed=self.config.seed, epoch=epoch, rank=0, world=self.world
            )
            self.cache[epoch] = plan.steps
        return self.cache[epoch]


def resume_skip(position: Position, planned: int) -> int:
    """Batches of the resumed epoch to pass over, given that epoch now plans `planned` batches: the
    recorded `batch` when the plan is the one it was saved under, else the same fraction of the new plan
    (another worker count re-deals the units, so no batch of the old plan exists in the new one)."""
    if position.batch <= 0:
        return 0
    if position.epoch_steps in (0, planned):
        return min(position.batch, planned)
    return min(planned, round(position.batch * planned / position.epoch_steps))


def remaining_steps(position: Position, schedules, steps) -> int:
    """Optimiser steps still to run from `position` through `schedules` ((phase, schedule, first global
    epoch) each), with `steps(global epoch)` the steps of an epoch at this run's worker count."""
    left = 0
    for phase, schedule, first in schedules:
        if phase < position.phase:
            continue
        start = position.epoch if phase == position.phase else 0
        for epoch in range(start, schedule.epochs):
            planned = steps(first + epoch)
            skip = resume_skip(position, planned) if (phase, epoch) == (position.phase, position.epoch) else 0
            left += planned - skip
    return left


def to_device(value, device):
    """Tensors (also inside a dict, e.g. the style labels) moved to `device`; anything else (the prompts
    of an image-text batch) passed as it is."""
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def optimizer_step(wrapped, optimizer, scaler, batch, device, amp_dtype=None):
    """One optimiser step on one loader batch: to device, forward (autocast when `amp_dtype`), backward
    (through `scaler` for fp16), step. Returns (total loss, {name: loss}), detached."""
    inputs = {k: to_device(v, device) for k, v in batch.items() if k != "keys"}
    with torch.autocast(
        device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    ):
        loss, parts = wrapped(inputs)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), parts


def phase_schedule(config: TrainConfig, phases: tuple[int, ...]) -> list[tuple[int, Any, int]]:
    """(phase, its schedule, global epoch of its first epoch) for each phase the method has. A schedule
    has `epochs`, `lr`, `weight_decay` and `warmup_epochs`."""
    out, offset = [], 0
    for phase in phases:
        schedule = config.phase1 if phase == 1 else config.phase2
        out.append((phase, schedule, offset))
        offset += schedule.epochs
    return out
