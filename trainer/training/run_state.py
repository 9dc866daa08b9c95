"""Whether a `dppp train` run is already finished, read on the driver before Ray starts.

A run is finished once its final/checkpoint.json is committed (written last, trainer/training/loop.py). A
rerun of a finished run trains nothing: Ray Train would resume it from its last checkpoint, find no epoch
left, and rewrite final/ unchanged. A rerun that asks for other epochs than the finished run ran is refused
unless `extend` says to continue it (more epochs only: the learning-rate curve is recomputed for the new
length, so the continued run differs from one trained to that length from the start).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dppp.foundation.errors import ConfigError
from dppp.foundation.storage.base import ObjectNotFound
from dppp.trainer.training.config import TrainConfig

FINAL_MARKER = "final/checkpoint.json"  # dppp.trainer.methods.checkpoint.META_FILE inside dppp.trainer.training.loop.FINAL_DIR


@dataclass(frozen=True)
class FinishedRun:
    step: int  # the run's last global step
    epochs: dict[str, int]  # {"phase1": n, "phase2": m} it ran


def _epochs(train: dict) -> dict[str, int]:
    return {name: int((train.get(name) or {}).get("epochs", 0)) for name in ("phase1", "phase2")}


def finished_run(run_storage) -> FinishedRun | None:
    """The finished run at `run_storage` (the run's folder), or None when it has no committed final/."""
    try:
        meta = json.loads(run_storage.read_bytes(FINAL_MARKER))
        train = (meta.get("config") or {}).get("train") or {}
        return FinishedRun(int(meta["step"]), _epochs(train))
    except ObjectNotFound:
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # an unreadable marker: Ray Train's resume and the worker's checks speak for it


def check_rerun(finished: FinishedRun, config: TrainConfig, run_url: str, *, extend: bool) -> bool:
    """True when `finished` is to be extended to `config`'s epochs, False when the rerun has nothing to
    train; ConfigError when the epochs differ and that is not allowed."""
    asked = _epochs(config.model_dump(mode="json"))
    if asked == finished.epochs:
        return False
    changes = ", ".join(
        f"train.{name}.epochs {finished.epochs[name]} -> {asked[name]}"
        for name in asked
        if asked[name] != finished.epochs[name]
    )
    if any(asked[name] < finished.epochs[name] for name in asked):
        raise ConfigError(
            f"run {run_url} is finished ({finished.step} steps) and this config asks for fewer epochs "
            f"({changes}): a finished run cannot be shortened; train a new run (--set train.run_name=NAME)"
        )
    if not extend:
        raise ConfigError(
            f"run {run_url} is finished ({finished.step} steps) and this config asks for more epochs "
            f"({changes}): pass --extend to continue it from step {finished.step} (its learning-rate "
            "curve is recomputed for the new length), or train a new run (--set train.run_name=NAME)"
        )
    return True
