"""The pieces of one training step and its schedule, shared by `dppp train` and `dppp pretrain`: the run
position a checkpoint records, the DDP loss wrapper, the learning-rate curve (linear warm-up, cosine
decay), the steps per epoch known up front, and one optimiser step (to device, autocast, backward, step).
The per-worker loop that drives them is trainer/train_loop.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.data.plan import plan_epoch
from trainer.data.sources import TrainingData


@dataclass
class Position:
    phase: int
    epoch: int  # epoch within the phase
    batch: int  # batches of that epoch already done
    step: int  # global optimiser steps done


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
