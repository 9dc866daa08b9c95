"""Joining a Ray cluster or starting a local one: shared by `dppp generate` and `dppp train`."""

from __future__ import annotations

import math
import os


def start_ray(address: str | None, cpus_needed: float = 1) -> None:
    """Join `address` (or RAY_ADDRESS) when given, else start a local instance with room for the job.

    A local instance gets at least `cpus_needed` logical CPUs, even on a smaller machine, so a pool asked
    for explicitly (e.g. 4 workers on 2 cores) starts oversubscribed instead of waiting forever."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        # The dashboard (on 127.0.0.1) serves the state API that Ray Train's placement-group cleaner polls;
        # without it the cleaner logs a warning every few seconds for the whole run.
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)), logging_level="WARNING")
