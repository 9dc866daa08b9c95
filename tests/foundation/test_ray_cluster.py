"""foundation/ray_cluster.py: what `dppp generate/train` do before and around joining a Ray cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from dppp.foundation.errors import UserError
from dppp.foundation.ray_cluster import check_reachable, keep_cluster_messages_off_the_terminal, start_ray

# Another local Ray instance, as another user's or test run's on the same machine: its own RAY_TMPDIR, so
# nothing of it is found through Ray's address file; it stops when its standard input closes.
OTHER_INSTANCE = (
    "import sys, ray; ray.init(num_cpus=0, include_dashboard=False); print('up', flush=True); "
    "sys.stdin.read(); ray.shutdown()"
)


def test_an_address_nothing_answers_on_is_a_clear_error_at_once(monkeypatch):
    """ray.init would retry it for minutes; `--ray-address` to a dead head says so after one try."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tries = []
    connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tries.append(a) or connect(*a, **k))
    with pytest.raises(UserError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}")
    assert tries == [(("127.0.0.1", port),)]  # one connection attempt, no retry loop
    check_reachable("ray://head:10001")  # Ray client and "auto" addresses are left to Ray
    check_reachable("auto")


def test_cluster_messages_stay_off_the_terminal_and_worker_output_does_not(monkeypatch, capsys):
    """Ray's driver prints what the cluster publishes (a dead raylet's log tail) through the same printer
    as the actors' own output; only the former is kept off the terminal. The end-to-end check, a node
    really killed under `dppp generate`, is tests/pipeline/test_node_loss.py."""
    from ray._private import worker as ray_worker

    monkeypatch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)  # restored after
    keep_cluster_messages_off_the_terminal()
    keep_cluster_messages_off_the_terminal()  # idempotent: wrapped once
    tail = "Raylet is terminated. Termination is unexpected.\n    [state-dump] NodeManager: 1 total"
    ray_worker.print_to_stdstream({"lines": [tail], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    ray_worker.print_to_stdstream(
        {
            "lines": ["renderer: xformers unavailable"],
            "pid": 4242,
            "is_err": True,
            "ip": "x",
            "localhost": "x",
            "actor_name": "ShardActor",
        },
        ignore_prefix=False,
    )
    captured = capsys.readouterr()
    assert "state-dump" not in captured.out + captured.err and "Raylet" not in captured.out + captured.err
    assert "renderer: xformers unavailable" in captured.err


@pytest.mark.slow
def test_workers_find_their_own_cluster_while_another_local_instance_runs():
    """Ray Train's PlacementGroupCleaner asks the state API about the controller from inside a worker
    process. A worker without RAY_ADDRESS looks for Ray's processes on the machine; with a second local
    instance running it found two, and `make demo` showed the cleaner's traceback ("Found multiple active
    Ray instances"). start_ray tells every worker its own cluster."""
    import ray

    assert not ray.is_initialized()
    temp = tempfile.mkdtemp(prefix="dppp-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_INSTANCE],
        env={**os.environ, "RAY_TMPDIR": temp},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "up"
        start_ray(None)

        @ray.remote(num_cpus=0)
        class Idle:
            def actor_id(self) -> str:
                return ray.get_runtime_context().get_actor_id()

        @ray.remote(num_cpus=0)
        def state_of(actor_id: str) -> tuple[str, str]:
            from ray.util.state import get_actor  # what the cleaner calls, with no address

            return get_actor(actor_id).state, os.environ["RAY_ADDRESS"]

        idle = Idle.remote()
        state, address = ray.get(state_of.remote(ray.get(idle.actor_id.remote(), timeout=120)), timeout=120)
        assert state == "ALIVE"
        assert address == ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        other.stdin.close()
        try:
            other.wait(timeout=60)
        except subprocess.TimeoutExpired:
            other.kill()
        shutil.rmtree(temp, ignore_errors=True)
