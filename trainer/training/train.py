"""`dppp train`: the streaming training run on Ray Train (the per-worker loop is trainer/training/loop.py).

    result = run_train(config, ["s3://bucket/demo"], "s3://bucket/runs", workers=2)
    result.final_url      # s3://bucket/runs/<run_name>/final  (model.safetensors + checkpoint.json)

Everything that can be checked before Ray starts is checked here, on the driver: the config, every data
source (committed shards only), the style labels the method needs, and that every epoch gives every
worker at least one P x K batch. A bad --data or config therefore fails in a second with one clear
message instead of after a worker group has started (and been retried `max_failures` times).

The run lives at <out>/<run_name>/: Ray Train's checkpoints (the newest `checkpoint_keep`), metrics.jsonl,
tensorboard/, loss_curves.png and final/. Ray Train V2 resumes a run by its (storage path, name): a rerun
with the same run name continues from the newest checkpoint, and a worker group that loses a worker (its
process, or the node it ran on) is restarted from it on whatever nodes have room (FailureConfig). A start
that cannot place every worker within `placement_timeout_s` is tried once more; then the run stops with a
CapacityError (exit 1) instead of Ray Train's default of retrying forever.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dppp.foundation.config import with_updates
from dppp.foundation.errors import CapacityError, ConfigError
from dppp.foundation.graceful_stop import graceful_stop
from dppp.foundation.ray_cluster import start_ray
from dppp.foundation.storage.urls import open_storage
from dppp.trainer.clip.model_card import check_people_disjoint
from dppp.trainer.data.sources import open_training_data
from dppp.trainer.methods.registry import method_spec
from dppp.trainer.training.config import RunSettings, TrainConfig
from dppp.trainer.training.held_out import check_eval_datasets
from dppp.trainer.training.progress import TrainWatch
from dppp.trainer.training.resume import prepare_resume
from dppp.trainer.training.run_state import check_rerun, finished_run

# ray, and the modules that import torch or ray.train at their top (steps, loop, clip.backbone, run_failures),
# are imported inside the functions that need them: the config and data checks below fail in a second, before
# Ray or torch is loaded.


@dataclass
class TrainResult:
    run_url: str  # <out>/<run_name>
    final_url: str  # <run_url>/final, for `dppp eval`
    steps: int  # global optimiser steps of the whole run, at its end
    wall_s: float
    starts: list[dict[str, Any]] = field(default_factory=list)  # one per worker-group start (resumes too)
    last_epoch: dict[str, Any] = field(default_factory=dict)  # the last epoch's mean losses
    health: dict[str, Any] = field(
        default_factory=dict
    )  # PDM's phase-1 health report (trainer/methods/health.py)
    already_finished: bool = False  # a rerun of a finished run: nothing was trained
    evals: list[dict[str, Any]] = field(default_factory=list)  # the newest train.eval record per dataset

    @property
    def resumed_from(self) -> int | None:
        """The step this command's first start resumed from (None: a fresh run)."""
        first = self.starts[0] if self.starts else {}
        return int(first.get("step", 0)) if first.get("resumed") else None

    @property
    def trained(self) -> int:
        """Steps this command advanced the run by (steps redone after a restart count once)."""
        return 0 if self.already_finished else self.steps - (self.resumed_from or 0)


def absolute_out(out: str) -> str:
    """Ray Train workers run in their own working directory: a relative local --out is made absolute on
    the driver, or final/ and metrics.jsonl would land in the worker's session folder. URLs stay as given."""
    return out if "://" in out else os.path.abspath(out)


def run_url_for(out: str, run_name: str) -> str:
    return f"{out.rstrip('/')}/{run_name}"


def ray_storage(out: str, storage_config) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train's RunConfig from a local path or s3:// URL."""
    storage = open_storage(out, storage_config)
    if storage.local_root is not None:
        return str(storage.local_root), None
    filesystem, path = storage.arrow_filesystem()
    return path, filesystem


def total_steps(config: TrainConfig, data, world: int) -> int:
    """Optimiser steps of the whole run; raises DataError naming the first epoch that forms no batch."""
    from dppp.trainer.training.steps import phase_schedule

    return schedule_steps(
        config, data, world, phase_schedule(config, method_spec(config.model.method).phases)
    )


def schedule_steps(config: RunSettings, data, world: int, schedules) -> int:
    """Optimiser steps of `schedules` ((phase, schedule, first global epoch) each) on `data`."""
    from dppp.trainer.training.steps import EpochSteps

    steps = EpochSteps(data, config, world)
    return sum(steps(first + e) for _phase, schedule, first in schedules for e in range(schedule.epochs))


def check_style_labels(config: TrainConfig, data) -> None:
    if not method_spec(config.model.method).style_label_phases:
        return
    missing = [a for a in config.model.style_attributes if a not in data.style_values]
    if missing:
        raise ConfigError(
            f"style attributes {missing} are not labelled by every data source (labelled: "
            f"{sorted(data.style_values)}); list only those in train.model.style_attributes",
            path="train.model.style_attributes",
        )


def _section(config: RunSettings) -> str:
    """The experiment-config section `config` came from, for messages that name a setting."""
    return "train" if isinstance(config, TrainConfig) else "pretrain"


# Starts of the worker group that may fail (not placed in time, a worker dying while it starts) before the
# run stops. Ray Train's default is unlimited: a run whose lost node never comes back would wait forever.
# One retry covers a node that died but that Ray had not yet declared dead when the group restarted.
_START_RETRIES = 1


def _capacity_error(exc: BaseException, config: RunSettings) -> CapacityError | None:
    # Ray Train's "the worker group could not be placed in time" / "the cluster can never hold it".
    from ray.train.v2._internal.exceptions import (
        InsufficientClusterResourcesError,
        WorkerGroupStartupTimeoutError,
    )

    no_capacity = (WorkerGroupStartupTimeoutError, InsufficientClusterResourcesError)
    from dppp.trainer.training.run_failures import causes

    if not any(isinstance(current, no_capacity) for current in causes(exc)):
        return None
    return CapacityError(
        f"the Ray cluster has no room for {config.workers} training worker(s) ({config.cpus_per_worker:g} CPU"
        + (" and 1 GPU" if config.use_gpu else "")
        + f" each): {_START_RETRIES + 1} starts waited "
        f"{_section(config)}.placement_timeout_s = {config.placement_timeout_s:g} s each (a node was lost, or the cluster "
        "is too small). Checkpoints are kept: rerun the same command once the cluster has room again; it "
        "resumes from the newest one."
    )


@contextmanager
def _worker_group_start_timeout(seconds: float) -> Iterator[None]:
    """Ray Train V2 reads this bound from the driver's environment (and passes it on to its controller)."""
    name = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
    before = os.environ.get(name)
    os.environ[name] = f"{seconds:g}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_train(
    config: TrainConfig,
    data: list[str] | None = None,
    out: str | None = None,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    use_gpu: bool | None = None,
    progress: bool = True,
    progress_every: float | None = None,
    extend: bool = False,
) -> TrainResult:
    """Train `config.model` on the committed shards of `data` (default: config.data.sources) with
    `workers` Ray Train workers, checkpoints and outputs under <out>/<run_name>. Reruns resume; a rerun
    of a finished run trains nothing, or with `extend` continues it to more epochs (trainer/training/run_state.py)."""
    config = with_updates(config, "train", workers=workers, use_gpu=use_gpu, out=out)
    config = with_local_backbone(config)
    sources = list(data) if data else list(config.data.sources)
    training_data = open_training_data(
        sources, config.data.storage, config.data.folder_ids_per_unit, config.data.curation
    )
    check_style_labels(config, training_data)
    if config.model.backbone != "tiny":
        from dppp.trainer.clip.backbone import check_backbone

        check_backbone(config.model.backbone)
    check_people_disjoint(config.model.backbone, sources, config.data.storage)
    check_eval_datasets(config, sources)
    steps = total_steps(config, training_data, config.workers)
    done = finished_before(config, extend)
    if done is not None:
        return done
    from dppp.trainer.training.loop import train_worker

    return launch(
        config,
        training_data,
        steps,
        train_worker,
        ray_address=ray_address,
        progress=progress,
        progress_every=progress_every,
    )


def finished_before(config: TrainConfig, extend: bool) -> TrainResult | None:
    """The result of a rerun of a finished run that has nothing to train (None: train)."""
    run_url = run_url_for(absolute_out(config.out), config.run_name)
    storage = open_storage(run_url, config.data.storage)
    # a malformed --out, or one the run could not write to (a missing bucket, a read-only folder), is
    # said as such before anything is read from it
    storage.check_writable()
    finished = finished_run(storage)
    if finished is None or check_rerun(finished, config, run_url, extend=extend):
        return None
    return TrainResult(run_url, f"{run_url}/final", finished.step, 0.0, already_finished=True)


def with_local_backbone(config: TrainConfig) -> TrainConfig:
    """A backbone given as a relative local folder, made absolute: Ray Train workers run elsewhere."""
    backbone = config.model.backbone
    if backbone != "tiny" and not os.path.isabs(backbone) and os.path.isdir(backbone):
        model = config.model.model_copy(update={"backbone": os.path.abspath(backbone)})
        return config.model_copy(update={"model": model})
    return config


def launch(
    config: RunSettings,
    training_data,
    steps: int,
    worker_fn,
    *,
    ray_address: str | None = None,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    progress_every: float | None = None,
) -> TrainResult:
    """Run `worker_fn` (Ray Train's train_loop_per_worker) on `config.workers` workers over `training_data`
    (already checked on the driver; `extra` goes into its loop config): the run's storage, Ray, the progress
    bar, user errors unwrapped."""
    run_url = run_url_for(absolute_out(config.out), config.run_name)
    # a malformed --out fails here, and one the run could not write to (a missing bucket, a read-only folder)
    open_storage(run_url, config.data.storage).check_writable()

    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from dppp.trainer.training.run_failures import StopOnUserError

    storage_path, filesystem = ray_storage(config.out, config.data.storage)
    for line in prepare_resume(run_url, config.data.storage):  # a damaged or removed newest checkpoint
        print(line, file=sys.stderr, flush=True)
    # Ray Train narrates every worker-group restart with the lost workers' tracebacks; the progress bar
    # and the result say what happened, and Ray's logs keep the rest (docs/troubleshooting.md).
    start_ray(ray_address, config.workers * config.cpus_per_worker, worker_output=False)
    board = _progress_board().options(scheduling_strategy=_this_node()).remote()
    trainer = TorchTrainer(
        worker_fn,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "data": training_data,
            "out": run_url,
            "board": board,
            **(extra or {}),
        },
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoint_keep),
            failure_config=FailureConfig(
                max_failures=config.max_failures, controller_failure_limit=_START_RETRIES
            ),
            callbacks=[StopOnUserError()],  # damaged data or a bad setting: no worker-group restart
        ),
    )
    started = time.perf_counter()
    try:
        with _worker_group_start_timeout(config.placement_timeout_s):
            _fit_with_progress(trainer, board, steps, training_data.describe(), progress, progress_every)
    except Exception as exc:
        from dppp.trainer.training.run_failures import user_error

        reported = user_error(exc) or _capacity_error(exc, config)
        if reported is not None:
            raise reported from None
        raise
    finally:
        state = _safe_get(board)
        ray.kill(board)
    return TrainResult(
        run_url,
        f"{run_url}/final",
        int(state.get("end", {}).get("step", state.get("step_now", steps))),
        time.perf_counter() - started,
        state.get("starts", []),
        state.get("epoch", {}),
        state.get("health", {}),
        evals=list(state.get("evals", {}).values()),
    )


def _this_node():
    """Pins a helper actor to the driver's node: a node lost mid-run must not take the progress with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def _progress_board():
    import ray

    @ray.remote(num_cpus=0)
    class ProgressBoard:
        """Rank 0 posts its latest records here; the driver polls them for the progress bar."""

        def __init__(self):
            self.state: dict[str, Any] = {"starts": []}

        def update(self, record: dict[str, Any]) -> None:
            kind = record.get("kind", "step")
            if kind == "start":
                self.state["starts"].append(record)
            if kind == "eval":  # one per held-out dataset: the newest of each
                self.state.setdefault("evals", {})[record.get("dataset")] = record
            self.state[kind] = record
            if "step" in record:  # a phase record has none: it must not send the bar back to 0
                self.state["step_now"] = max(int(record["step"]), 0)

        def get(self) -> dict[str, Any]:
            return self.state

        def request_stop(self) -> None:  # the driver got SIGTERM / SIGINT (trainer/training/progress.py)
            self.state["stop_requested"] = True

        def stop_requested(self) -> bool:
            return bool(self.state.get("stop_requested"))

    return ProgressBoard


def _safe_get(board) -> dict[str, Any]:
    import ray

    try:
        return ray.get(board.get.remote(), timeout=10)
    except Exception:
        return {}


def _fit_with_progress(
    trainer, board, steps: int, description: str, progress: bool, progress_every: float | None = None
) -> None:
    """Ray Train's fit in a thread while this one shows the progress (trainer/training/progress.py); on
    SIGTERM / SIGINT: Interrupted, whose line says the step reached (the checkpoints stay for a rerun)."""
    outcome: dict[str, Any] = {}

    def fit():
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the calling thread
            outcome["error"] = exc

    with graceful_stop() as stop:
        thread = threading.Thread(target=fit, name="dppp-train-fit", daemon=True)
        thread.start()
        watch = TrainWatch(
            lambda: _safe_get(board), steps, description, progress=progress, stop=stop, every_s=progress_every
        )
        watch.watch(thread)
        if stop.requested and thread.is_alive():
            board.request_stop.remote()  # the workers checkpoint at their next logged step and return
            if watch.wind_down(thread, lambda: "error" in outcome):
                raise stop.interrupted(watch.stopped_line())
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
