"""Joining a Ray cluster or starting a local one: shared by `dppp generate` and `dppp train`."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from dppp.foundation.errors import UserError
from dppp.foundation.graceful_stop import reinstall

# ray is imported inside the functions that need it: pipeline/generate.py, trainer/training/train.py and
# trainer/curation/job.py import this module, and their dry runs and plans must not pay for ray.

log = logging.getLogger("dppp.ray")


def start_ray(address: str | None, cpus_needed: float = 1, *, worker_output: bool = True) -> None:
    """Join `address` (or RAY_ADDRESS) when given, else start a local instance with room for the job.

    A local instance gets at least `cpus_needed` logical CPUs, even on a smaller machine, so a pool asked
    for explicitly (e.g. 4 workers on 2 cores) starts oversubscribed instead of waiting forever.
    `worker_output=False` keeps what Ray's worker processes print (Ray Train's controller narrating each
    restart with the tracebacks of the workers it lost) in Ray's logs instead of on the terminal.

    A local instance's processes inherit this process's environment, storage credentials included: that
    is how its workers get them, never through a runtime_env (which Ray writes to its logs); a cluster's
    nodes carry their own (docs/cluster.md)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    options = {"logging_level": "WARNING", "log_to_driver": worker_output}
    if address:
        check_reachable(address)
        ray.init(address=address, **options)
    else:
        # The dashboard (on 127.0.0.1) serves the state API that Ray Train's placement-group cleaner polls;
        # without it the cleaner logs a warning every few seconds for the whole run.
        with own_address_for_ray_processes() as local:
            ray.init(address=local, num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)), **options)
    keep_cluster_messages_off_the_terminal()
    # ray.init installed absl's SIGTERM handler (a stack dump, then death): a graceful stop's comes back.
    reinstall()


@contextmanager
def own_address_for_ray_processes() -> Iterator[str]:
    """Start a local instance at an address chosen here, and put it in the environment its processes
    inherit (RAY_ADDRESS): the raylet, and so every worker, knows which cluster is its own.

    Ray's helpers that query the state API from inside a worker (Ray Train's PlacementGroupCleaner) look
    for their cluster in RAY_ADDRESS, else among the Ray processes running on the machine. Beside another
    local Ray instance they found two and failed ("Found multiple active Ray instances"): the cleaner's
    monitor thread died with a traceback on the terminal, and would no longer have cleaned up. Yields the
    address for ray.init: "local" starts a new instance whatever RAY_ADDRESS says. The driver's own
    environment is restored afterwards, so a later start_ray in this process starts afresh."""
    from ray.util import get_node_ip_address

    with socket.socket() as probe:  # a free port, as Ray picks its other ports
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    chosen = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{get_node_ip_address()}:{port}"}
    before = {name: os.environ.get(name) for name in chosen}
    os.environ.update(chosen)
    try:
        yield "local"
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail at once on a `host:port` nothing answers on: ray.init retries one for minutes on end."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # ray://, auto, or a malformed address: Ray's own message is the clearer one
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check the address "
            "(given, or RAY_ADDRESS) and that the head node is up"
        ) from None


def keep_cluster_messages_off_the_terminal() -> None:
    """Route Ray's cluster-wide system messages away from the driver's stdout, into the `dppp.ray` log.

    Ray pushes them to every driver and prints them as they come, in the middle of the progress bar: a
    raylet that died unexpectedly arrives with the last 20 lines of its log (`[state-dump] ...`), a node
    marked dead with a paragraph of possible causes, and each twice or more. They stay in Ray's own logs
    (`/tmp/ray/session_latest/logs/` on each node: raylet.out, gcs_server.out); dppp says what it did
    about them in its own words (docs/reliability.md). Output of our own actors and workers (their
    warnings) still reaches the terminal. Ray offers no option for this channel (`log_to_driver` covers
    only worker output), so the driver's printer for it is wrapped; tests check the terminal stays clean.
    """
    from ray._private import worker as ray_worker

    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "dppp_quiet", False):
        return

    def print_unless_cluster_message(data, *args, **kwargs):
        if (
            data.get("pid") == "raylet"
        ):  # what listen_error_messages publishes: system messages, not our output
            for message in data.get("lines", []):
                log.info("ray: %s", message.strip().splitlines()[0] if message.strip() else "")
            return None
        return printer(data, *args, **kwargs)

    print_unless_cluster_message.dppp_quiet = True
    ray_worker.print_to_stdstream = print_unless_cluster_message
