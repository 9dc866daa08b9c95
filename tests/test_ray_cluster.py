"""foundation/ray_cluster.py: what `dppp generate/train` do before and around joining a Ray cluster."""

from __future__ import annotations

import socket

import pytest

from foundation.errors import UserError
from foundation.ray_cluster import check_reachable, keep_cluster_messages_off_the_terminal


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
    really killed under `dppp generate`, is tests/test_node_loss.py."""
    from ray._private import worker as ray_worker

    monkeypatch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)  # restored after
    keep_cluster_messages_off_the_terminal()
    keep_cluster_messages_off_the_terminal()  # idempotent: wrapped once
    tail = "Raylet is terminated. Termination is unexpected.\n    [state-dump] NodeManager: 1 total"
    ray_worker.print_to_stdstream({"lines": [tail], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    ray_worker.print_to_stdstream({"lines": ["renderer: xformers unavailable"], "pid": 4242, "is_err": True,
                                   "ip": "x", "localhost": "x", "actor_name": "ShardActor"}, ignore_prefix=False)  # fmt: skip
    captured = capsys.readouterr()
    assert "state-dump" not in captured.out + captured.err and "Raylet" not in captured.out + captured.err
    assert "renderer: xformers unavailable" in captured.err
