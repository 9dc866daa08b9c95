"""The tests that kill a Ray worker on purpose take their own, and nothing of another job on the machine.

Beside stand-ins for another job's processes (titled as a shard actor inside a shard, a Ray Train worker,
a raylet of another instance with such workers below it), the selection of tests/ray_processes.py finds
exactly this instance's actor; the one it finds is killed; every stand-in still runs. A selection by title
across the machine (what tests/pipeline/test_generate.py did) takes the stand-ins: shown first, so the
stand-ins are known to be real bait.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.ray_processes import dead, descendants_titled, this_raylet, title_of


def titled_anywhere(marker: bytes) -> set[int]:
    """What a selection by name across the machine finds (never used to choose what to signal)."""
    return {
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and marker in title_of(int(p.name))
    }


def wait_for(find, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (found := find()):
        assert time.monotonic() < deadline, "nothing found in time"
        time.sleep(0.02)
    return found


def test_only_this_instances_workers_are_selected_and_killed(ray_instance, foreign_ray_processes):
    ray = ray_instance
    from ray.exceptions import RayActorError

    foreign = foreign_ray_processes
    assert {foreign["shard actor"], foreign["raylet's shard actor"]} <= titled_anywhere(b"ShardActor.run")
    assert {foreign["train worker"], foreign["raylet's train worker"]} <= titled_anywhere(b"RayTrainWorker")

    @ray.remote(num_cpus=0, max_concurrency=2)
    class ShardActor:  # titled `ray::ShardActor.run` while inside run(), as the pipeline's actor is
        def pid(self) -> int:
            return os.getpid()

        def run(self, seconds: float) -> None:
            time.sleep(seconds)

    @ray.remote(num_cpus=0)
    class RayTrainWorker:  # titled `ray::RayTrainWorker` when idle, as Ray Train's worker is
        def pid(self) -> int:
            return os.getpid()

    shard_actor, train_worker = ShardActor.remote(), RayTrainWorker.remote()
    shard_pid, train_pid = ray.get([shard_actor.pid.remote(), train_worker.pid.remote()])
    raylet = this_raylet()
    inside = shard_actor.run.remote(120)

    assert wait_for(lambda: descendants_titled(raylet, b"ShardActor.run")) == [shard_pid]
    assert descendants_titled(raylet, b"RayTrainWorker") == [train_pid]
    for pid in (shard_pid, train_pid):
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(RayActorError):
        ray.get(inside, timeout=60)
    assert not dead(foreign), "another job's processes were killed"
