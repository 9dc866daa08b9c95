"""Processes of *this* Ray instance, for the tests and benchmarks that kill one on purpose.

A test may signal only processes it started. Another job on the same machine (a second checkout's tests, a
user's `dppp generate`, a shared CI runner) runs Ray workers with the very same titles, so a process is
never chosen by a title matched across the machine: it is chosen among the descendants of this instance's
raylet (Ray starts every worker as a child of its node's raylet), whose pid Ray itself reports (the parent
of a task's process), and only then by its title (what the worker is doing right now).

    raylet = this_raylet()                                  # after ray.init() / start_ray()
    busy = descendants_titled(raylet, b"ShardActor.run")    # this instance's actors inside a shard

`foreign_processes()` starts stand-ins for another job's processes, named as the real ones are, so a test
can show that none of them is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path


def parent_of(pid: int) -> int:
    """The parent pid of `pid`, 0 if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def is_running(pid: int) -> bool:
    """Whether `pid` exists and has not died: a killed child stays a zombie (state Z) until its parent
    reaps it, and `kill -0` still succeeds on a zombie, so the state is read instead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def process_tree() -> dict[int, list[int]]:
    """parent pid -> its children's pids, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children.setdefault(parent_of(int(entry.name)), []).append(int(entry.name))
    return children


def descendants(root: int, tree: dict[int, list[int]] | None = None) -> set[int]:
    """Every process below `root` (children, their children, ...) in `tree` (default: now)."""
    children = process_tree() if tree is None else tree
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def title_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants_titled(root: int, marker: bytes, tree: dict[int, list[int]] | None = None) -> list[int]:
    """Pids below `root` whose title holds `marker` (e.g. b"ShardActor.run", b"RayTrainWorker")."""
    return sorted(pid for pid in descendants(root, tree) if marker in title_of(pid))


def this_raylet() -> int:
    """The pid of the raylet of the node this driver is connected to, as Ray reports it: the parent of
    the process a task runs in (no CPU asked, so it never waits behind the job's own work)."""
    import ray

    @ray.remote(num_cpus=0)
    def parent_pid() -> int:
        return os.getppid()

    return ray.get(parent_pid.options(scheduling_strategy=_this_node()).remote())


def _this_node():
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


# Stand-ins for another Ray job's processes on this machine: titled as Ray titles its workers, and a raylet
# of another instance with workers of its own below it (a selection by "descends from a raylet" found by
# name would take them). Each is a `sleep`, started here, ended here by its own pid.
FOREIGN = {
    "shard actor": "ray::ShardActor.run",
    "train worker": "ray::RayTrainWorker._RayTrainWorker__execute",
    "raylet": (
        "/opt/other-job/ray/core/src/ray/raylet/raylet "
        "--raylet_socket_name=/tmp/ray/session_other/sockets/raylet --node_manager_port=45999"
    ),
}
_UNDER_RAYLET = {
    "raylet's shard actor": FOREIGN["shard actor"],
    "raylet's train worker": FOREIGN["train worker"],
}


@contextmanager
def foreign_processes(seconds: int = 3600):
    """Start the stand-ins; yield {name: pid}; kill each by its pid at the end."""
    started: list[subprocess.Popen] = []
    pids: dict[str, int] = {}
    try:
        for name, title in FOREIGN.items():
            if name == "raylet":
                # the raylet stand-in's children: background jobs of the shell that then becomes the raylet
                script = "".join(
                    f"(exec -a '{child}' sleep {seconds}) & echo $!; " for child in _UNDER_RAYLET.values()
                )
                script += f"exec -a '{title}' sleep {seconds}"
            else:
                script = f"exec -a '{title}' sleep {seconds}"
            process = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
            started.append(process)
            pids[name] = process.pid
            if name == "raylet":
                for child in _UNDER_RAYLET:
                    pids[child] = int(process.stdout.readline())
        _wait_for_titles(pids)
        yield pids
    finally:
        for name, pid in pids.items():
            if name in _UNDER_RAYLET and is_running(pid):
                os.kill(pid, signal.SIGKILL)
        for process in started:
            process.kill()
            process.wait()
            process.stdout.close()


def _wait_for_titles(pids: dict[str, int], timeout_s: float = 10.0) -> None:
    """Until every stand-in has exec'd into its title (bash runs briefly under its own name first)."""
    import time

    titles = {**FOREIGN, **_UNDER_RAYLET}
    deadline = time.monotonic() + timeout_s
    while not all(title_of(pid).startswith(titles[name].split()[0].encode()) for name, pid in pids.items()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"stand-in processes did not start: {pids}")
        time.sleep(0.01)


def dead(pids: dict[str, int]) -> list[str]:
    """The stand-ins that no longer run."""
    return [name for name, pid in pids.items() if not is_running(pid)]
