"""The per-worker training loop that Ray Train runs on every rank (trainer/training/train.py builds the trainer).

    for each phase of the method (its registry entry, trainer/methods/registry.py):
        [the method's `prepare_phase`, e.g. an identity bank all-reduced over ranks] -> its epochs
    -> final model

Every rank builds the same model (seeded), streams its own disjoint shards (trainer/data/) and runs the
same number of steps per epoch, so DDP's collective calls always pair up (the step, its learning rate and
the run position are trainer/training/steps.py). The position in the run is
(phase, epoch, batch) plus the global step; it goes into every checkpoint, and a restarted worker group
(a rerun with the same run name, or Ray Train's FailureConfig after a worker died) resumes from it
exactly: weights, optimizer, learning-rate schedule and the epoch's remaining batches.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dppp.foundation.errors import DataError
from dppp.foundation.storage.urls import open_storage
from dppp.trainer.data.loader import epoch_batches
from dppp.trainer.data.sources import TrainingData
from dppp.trainer.data.streams import PKBatchStream
from dppp.trainer.methods.checkpoint import (
    META_FILE,
    read_state,
    restore_model,
    restore_optimizer,
    save_checkpoint,
)
from dppp.trainer.methods.model import build_model
from dppp.trainer.methods.registry import PhaseRun
from dppp.trainer.methods.wise import interpolate_weights, starting_backbone_state
from dppp.trainer.training.config import TrainConfig
from dppp.trainer.training.held_out import HeldOutEval
from dppp.trainer.training.progress import stop_requested
from dppp.trainer.training.run_log import RunLog
from dppp.trainer.training.steps import (
    EpochSteps,
    LossModule,
    PhaseProgress,
    Position,
    optimizer_step,
    phase_schedule,
    remaining_steps,
    resume_skip,
)

# ray.train is imported inside RayTrainSession and _quiet_ray_train_logs: a Worker with an in-process session
# (tests, trainer/pretraining) must not pay for Ray Train.

FINAL_DIR = "final"


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker."""
    _quiet_ray_train_logs()
    config = TrainConfig.model_validate(loop_config["config"])
    Worker(config, loop_config["data"], loop_config["out"], loop_config.get("board")).run()


def _quiet_ray_train_logs() -> None:
    """Ray Train logs every report and checkpoint upload at INFO from each worker, which buries the
    progress bar; our own metrics say the same. Its loggers are internal, so this is best effort."""
    try:
        from ray.train.v2._internal.execution import context, storage
    except ImportError:
        return
    for name in (context.__file__, storage.__name__):  # Ray names context's logger by its file, not module
        logging.getLogger(name).setLevel(logging.WARNING)


class RayTrainSession:
    """A worker's link to Ray Train: its rank, the checkpoint it resumes from, and where reports go."""

    def __init__(self):
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()

    def device(self, use_gpu: bool) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device() if use_gpu else torch.device("cpu")

    def resume_checkpoint(self, local: Path) -> str | None:
        """Copy the checkpoint to resume from into `local` and return its folder's name; None: none."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        checkpoint.to_directory(str(local))
        return Path(checkpoint.path).name

    def report(self, metrics: dict[str, Any], folder: str | None) -> None:
        """Ray Train's report, with the checkpoint in `folder` attached (uploaded before it returns)."""
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)


class Worker:
    """One rank of a progress. `dppp train` uses it as it is; `dppp pretrain` (trainer/pretraining/pretrain.py) overrides
    what differs: build, schedules, batch_options and save_final. `session` (Ray Train's by default) gives
    the rank and takes the reports; tests pass an in-process one."""

    def __init__(self, config: TrainConfig, data: TrainingData, out: str, board, session=None):
        self.config, self.data, self.out, self.board = config, data, out, board
        self.session = session if session is not None else RayTrainSession()
        self.rank, self.world = self.session.rank, self.session.world
        self.device = self.session.device(config.use_gpu)
        self.cuda = self.device.type == "cuda"
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)
        self.steps = EpochSteps(data, config, self.world)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"dppp-train-r{self.rank}-"))
        self.last_epoch: dict[str, Any] = {}
        self.stopped = False

    # ---- set-up and resume ------------------------------------------------------------------------

    def build(self):
        model = build_model(self.config.model, self.data.num_classes, self.data.style_vocab)
        return model.to(self.device)

    def restore(self, model) -> tuple[Position, Path | None]:
        """The position to start from, and the local copy of the checkpoint (None: a fresh start)."""
        local = self.workdir / "resume"
        name = self.session.resume_checkpoint(local)
        if name is None:
            return Position(model.phases[0], 0, 0, 0), None

        where = f"{self.out}/{name}"  # the checkpoint's URL, not the local copy's
        try:
            state = restore_model(local, model)
        except DataError as exc:
            raise type(exc)(str(exc).replace(str(local), where)) from None
        recorded = (state.config or {}).get("progress")
        if not recorded:
            raise DataError(f"{where}: checkpoint records no training progress")
        return Position(**recorded), local

    # ---- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        torch.manual_seed(self.config.seed + self.rank)
        model = self.build()
        position, resume_dir = self.restore(model)
        self.global_step = position.step
        self.log = None
        self.held_out = self.held_out_eval(model)
        if self.rank == 0:
            self.storage = open_storage(self.out, self.config.data.storage)
            self.log = RunLog(self.storage, self.workdir / "log", position.step)
            self.record(self.start_record(model, position, resumed=resume_dir is not None))
        for phase, schedule, first_epoch in self.schedules(model):
            if phase < position.phase:
                continue
            if phase != model.phase:  # entering this phase now (not resumed inside it)
                self.enter_phase(model, phase)
                position = Position(phase, 0, 0, position.step)
                resume_dir = None
                self.checkpoint(model, None, position, {"kind": "phase", "phase": phase})
            self.train_phase(model, phase, schedule, first_epoch, position, resume_dir)
            if self.stopped:  # a graceful stop (SIGTERM to the driver): checkpointed, nothing more
                shutil.rmtree(self.workdir, ignore_errors=True)
                return
            position = Position(phase + 1, 0, 0, self.global_step)
            resume_dir = None
        if self.rank == 0:
            self.write_final(model)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def start_record(self, model, position: Position, *, resumed: bool) -> dict[str, Any]:
        """Where this start begins and the step the run will end at, counted at this start's worker
        count (a resume with another count plans the remaining epochs afresh): the progress bar's total."""
        record = {
            "kind": "start",
            "step": position.step,
            "phase": position.phase,
            "epoch": position.epoch,
            "batch": position.batch,
            "world": self.world,
            "resumed": resumed,
            "total_steps": position.step + remaining_steps(position, self.schedules(model), self.steps),
            "images": self.data.num_images,
            "curation_dropped": self.data.curated,
        }
        if position.batch and position.epoch_steps:
            first = {phase: start for phase, _s, start in self.schedules(model)}.get(position.phase, 0)
            planned = self.steps(first + position.epoch)
            if planned != position.epoch_steps:
                record["replanned"] = {
                    "batch": position.batch,
                    "of": position.epoch_steps,
                    "now_batch": resume_skip(position, planned),
                    "now_of": planned,
                }
        return record

    def held_out_eval(self, model):
        """`train.eval`'s evaluator on rank 0 (trainer/training/held_out.py), or None."""
        settings = getattr(self.config, "eval", None)
        if self.rank != 0 or settings is None or not settings.datasets:
            return None
        return HeldOutEval(self.config, model.phases[-1])

    def schedules(self, model) -> list[tuple[int, Any, int]]:
        return phase_schedule(self.config, model.phases)

    def batch_options(self, model, phase: int) -> dict[str, Any]:
        """How the loader makes this phase's batches: with the style labels the method asks for, and
        phase 1 reads un-augmented images unless `phase1.augment`."""
        return {
            "style_attributes": model.batch_style_attributes(phase),
            "augment": phase != 1 or self.config.phase1.augment,
        }

    def enter_phase(self, model, phase: int) -> None:
        """Between the phases: the method's own preparation (e.g. PDM's identity bank), then the switch."""
        model.prepare_phase(phase, self.phase_run())
        model.set_phase(phase)

    def phase_run(self) -> PhaseRun:
        return PhaseRun(
            config=self.config,
            data=self.data,
            rank=self.rank,
            world=self.world,
            device=self.device,
            cuda=self.cuda,
            step=self.global_step,
            record=self.record,
            last_epoch=lambda: self.last_epoch or self.log.last("epoch"),
        )

    def train_phase(self, model, phase, schedule, first_epoch, position: Position, resume_dir) -> None:
        """The phase's epochs from `position` (inside the phase when resumed there), each checkpointed at
        its end; returns early with `self.stopped` set when a graceful stop was requested."""
        self.global_step = position.step
        if schedule.epochs == 0 or position.epoch >= schedule.epochs:
            return
        progress = self.start_phase(model, phase, schedule, first_epoch, position, resume_dir)
        options = self.batch_options(model, phase)
        model.train()

        def make_stream(epoch: int) -> PKBatchStream:  # epoch within the phase
            return PKBatchStream(
                self.data,
                self.config.data,
                self.config.model.image_size,
                seed=self.config.seed,
                epoch=first_epoch + epoch,
                rank=self.rank,
                world=self.world,
                skip=progress.resume_at if epoch == progress.resume_epoch else 0,
                **options,
            )

        epochs = range(position.epoch, schedule.epochs)
        for epoch, (stream, batches) in zip(
            epochs, epoch_batches(make_stream, epochs, self.config.data, pin_memory=self.cuda), strict=True
        ):
            if not self.train_epoch(model, progress, epoch, stream, batches):
                self.stopped = True
                return
            self.end_epoch(model, progress, epoch, stream)

    def start_phase(
        self, model, phase, schedule, first_epoch, position: Position, resume_dir
    ) -> PhaseProgress:
        """The phase's optimiser, DDP wrapper, gradient scaler and step counts, at `position`."""
        optimizer = self.make_optimizer(model, schedule, resume_dir)
        wrapped = self.wrap_for_ranks(model)
        scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and self.amp_dtype is torch.float16)
        resume_at = resume_skip(position, self.steps(first_epoch + position.epoch))
        return PhaseProgress(
            phase=phase,
            schedule=schedule,
            optimizer=optimizer,
            wrapped=wrapped,
            scaler=scaler,
            total=sum(self.steps(first_epoch + e) for e in range(schedule.epochs)),
            warmup=sum(
                self.steps(first_epoch + e) for e in range(min(schedule.warmup_epochs, schedule.epochs))
            ),
            resume_at=resume_at,
            resume_epoch=position.epoch,
            monitored=set(model.monitored),
            step_in_phase=sum(self.steps(first_epoch + e) for e in range(position.epoch)) + resume_at,
        )

    def make_optimizer(self, model, schedule, resume_dir) -> torch.optim.Optimizer:
        """The phase's AdamW over the method's parameter groups, its state restored when resumed inside
        this phase."""
        # Only phase 2's schedule has the option (pretraining's models take no such argument).
        scale = getattr(schedule, "backbone_lr_scale", 1.0)
        if scale == 1.0:
            groups = model.parameter_groups(schedule.weight_decay)
        else:
            groups = model.parameter_groups(schedule.weight_decay, backbone_lr_scale=scale)
        optimizer = torch.optim.AdamW(groups, lr=schedule.lr, weight_decay=schedule.weight_decay)
        if resume_dir is not None and read_state(resume_dir).has_optimizer:
            scales = [group.get("lr_scale") for group in optimizer.param_groups]
            restore_optimizer(resume_dir, optimizer)
            # Loading takes the saved groups' settings; the scales are this run's config, not the saved one.
            for group, group_scale in zip(optimizer.param_groups, scales, strict=True):
                if group_scale is not None:
                    group["lr_scale"] = group_scale
        return optimizer

    def wrap_for_ranks(self, model) -> nn.Module:
        """The loss as a module's forward, in DDP when there are several ranks (gradients all-reduced)."""
        wrapped = LossModule(model)
        if self.world > 1:
            wrapped = nn.parallel.DistributedDataParallel(
                wrapped, device_ids=[self.device.index] if self.cuda else None
            )
        return wrapped

    def train_epoch(self, model, progress: PhaseProgress, epoch: int, stream, batches) -> bool:
        """One epoch's steps (its resumed part), logged every `log_every_steps` and checkpointed every
        `checkpoint_every_steps`; False when it stopped early on a stop request (checkpointed)."""
        progress.start_epoch(stream.skip)
        for batch in batches:
            lr = progress.lr(self.config.lr_floor)
            for group in progress.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss, parts = self.step(progress.wrapped, progress.optimizer, progress.scaler, batch)
            progress.step_in_phase += 1
            self.global_step += 1
            progress.add(loss, parts, images=len(batch["pids"]))
            if self.global_step % self.config.log_every_steps == 0 or progress.done == stream.steps:
                self.log_window(progress, epoch, stream.steps, lr)
                if progress.done < stream.steps and stop_requested(
                    self.board, self.rank, self.world, self.device
                ):
                    self.checkpoint(
                        model,
                        progress.optimizer,
                        Position(progress.phase, epoch, progress.done, self.global_step),
                        {"kind": "stop", "step": self.global_step, "phase": progress.phase, "epoch": epoch},
                    )
                    return False
            every = self.config.checkpoint_every_steps
            if every and self.global_step % every == 0 and progress.done < stream.steps:
                self.checkpoint(
                    model,
                    progress.optimizer,
                    Position(progress.phase, epoch, progress.done, self.global_step, stream.steps),
                    {"kind": "step", "phase": progress.phase, "epoch": epoch},
                )
        if progress.done != stream.steps:
            raise RuntimeError(
                f"rank {self.rank}: epoch {epoch} gave {progress.done} batches, planned {stream.steps}"
            )
        return True

    def log_window(self, progress: PhaseProgress, epoch: int, steps_in_epoch: int, lr: float) -> None:
        """A step record: the means over ranks of the steps since the last one, and the image rate."""
        elapsed = time.perf_counter() - progress.window_start
        means = self.mean_over_ranks({k: v / progress.window_steps for k, v in progress.window.items()})
        self.record(
            {
                "kind": "step",
                "step": self.global_step,
                "phase": progress.phase,
                "epoch": epoch,
                "batch": progress.done,
                "steps_in_epoch": steps_in_epoch,
                "lr": lr,
                "images_per_s": progress.window_images * self.world / max(elapsed, 1e-9),
                **means,
            }
        )
        progress.start_window()

    def end_epoch(self, model, progress: PhaseProgress, epoch: int, stream) -> None:
        """The epoch record (means over its steps and the ranks), the held-out evaluation when due, and
        the epoch's checkpoint."""
        ran = stream.steps - stream.skip
        means = self.mean_over_ranks({k: v / max(ran, 1) for k, v in progress.epoch_sums.items()})
        record = {
            "kind": "epoch",
            "step": self.global_step,
            "phase": progress.phase,
            "epoch": epoch,
            "steps_in_epoch": stream.steps,
            **means,
        }
        if self.held_out is not None and self.held_out.due(progress.phase, epoch, progress.schedule.epochs):
            at = {"step": self.global_step, "phase": progress.phase, "epoch": epoch}
            for result in self.held_out.run(model, self.device, **at):
                self.record(result)
        self.checkpoint(
            model, progress.optimizer, Position(progress.phase, epoch + 1, 0, self.global_step), record
        )

    def step(self, wrapped, optimizer, scaler, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return optimizer_step(
            wrapped, optimizer, scaler, batch, self.device, self.amp_dtype if self.cuda else None
        )

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over all ranks (every rank calls this at the same steps)."""
        if self.world == 1 or not dist.is_initialized() or not values:
            return values
        names = sorted(values)
        tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return {n: float(v) / self.world for n, v in zip(names, tensor.tolist(), strict=True)}

    # ---- outputs ----------------------------------------------------------------------------------

    def record(self, metrics: dict[str, Any]) -> None:
        if metrics.get("kind") == "epoch":
            self.last_epoch = metrics
        if self.rank == 0:
            self.log.write(metrics)
            if self.board is not None:
                self.board.update.remote(metrics)

    def run_record(self, position: Position) -> dict[str, Any]:
        return {
            "train": self.config.model_dump(mode="json"),
            "progress": asdict(position),
            "data": {
                "sources": list(self.data.sources),
                "num_classes": self.data.num_classes,
                "style_values": {k: list(v) for k, v in self.data.style_values.items()},
            },
        }

    def checkpoint(self, model, optimizer, position: Position, metrics: dict[str, Any]) -> None:
        """Report `metrics` from every rank; rank 0 attaches a checkpoint at `position`. Ray Train uploads
        it to the run's storage before report() returns and keeps the newest `checkpoint_keep`."""
        self.global_step = position.step
        if self.rank != 0:
            self.session.report({**metrics, "step": position.step}, None)
            return
        self.record(metrics)
        self.log.publish()
        with tempfile.TemporaryDirectory(dir=self.workdir) as folder:
            save_checkpoint(folder, model, optimizer, step=position.step, config=self.run_record(position))
            self.session.report({**metrics, "step": position.step}, folder)

    def write_final(self, model) -> None:
        """final/ (its commit marker written last, removed first) and the published metrics, TensorBoard
        events and loss curves."""
        folder = self.workdir / FINAL_DIR
        marker = self.save_final(model, folder)
        self.storage.delete(f"{FINAL_DIR}/{marker}")
        for path in sorted(folder.iterdir()):
            if path.name != marker:
                self.storage.put_file(path, f"{FINAL_DIR}/{path.name}")
        self.storage.put_file(folder / marker, f"{FINAL_DIR}/{marker}")
        self.log.write({"kind": "end", "step": self.global_step})
        self.log.publish(curves=True)
        self.log.close()
        if self.board is not None:
            self.board.update.remote({"kind": "end", "step": self.global_step})

    def save_final(self, model, folder: Path) -> str:
        """Write the run's result into the local `folder`; returns the name of its commit marker.
        Here: model.safetensors + checkpoint.json (the marker), trainer/methods/checkpoint.py's format, for `dppp eval`;
        its backbone WiSE-FT-interpolated towards the start when `phase2.wise_alpha` < 1 (trainer/methods/wise.py)."""
        position = Position(model.phase, 0, 0, self.global_step)
        alpha = self.config.phase2.wise_alpha
        if alpha != 1.0:  # the run is over: the model is not trained further, so it moves in place
            interpolate_weights(model, starting_backbone_state(model), alpha)
        save_checkpoint(folder, model, None, step=self.global_step, config=self.run_record(position))
        return META_FILE
