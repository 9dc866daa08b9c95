"""The one timing helper of the benchmark scripts: run a function, report its wall and CPU seconds.

    from timing import timed          # the scripts run as `python benchmarks/bench_x.py`: benchmarks/ is
                                      # sys.path[0], so this module imports by its bare name
    result, wall_s, cpu_s = timed(fn, repeats=3)                 # medians of 3 runs
    timing = timed(fn, repeats=3, statistic="best", warmup=1)    # fastest of 3, after one untimed run

CPU seconds are this process's (time.process_time): on a machine shared with other jobs they are the
steadier figure, since wall time also counts the time other jobs held the cores. Work done in child
processes or a server is only in the wall time.

Two statistics, because the benchmarks chose differently and each keeps its own:
- "median": robust to one disturbed run either way;
- "best": the minimum, as timeit takes it: interference only ever adds time, so the fastest run is the
  least disturbed. Wall and CPU minima are taken separately (they may come from different runs).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "best": min}


class Timing(NamedTuple):
    """What `timed` returns; a tuple, so `result, wall_s, cpu_s = timed(...)` unpacks it."""

    result: Any  # fn's return value from the last timed run
    wall_s: float
    cpu_s: float


def timed(
    fn: Callable[..., Any],
    repeats: int = 1,
    *,
    statistic: Literal["median", "best"] = "median",
    warmup: int = 0,
    setup: Callable[[], Any] | None = None,
    wall_clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Timing:
    """Run `fn` `warmup` times untimed, then `repeats` times timed; the `statistic` of the timed runs.

    setup: called before every run (warm-up runs included), outside the timing; its return value is
    passed to `fn` (e.g. a fresh object with cold caches), which is then called as `fn(setup())`.
    wall_clock, cpu_clock: the clocks read around each run (tests pass their own).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")

    def run_once() -> tuple[Any, float, float]:
        args = () if setup is None else (setup(),)
        wall, cpu = wall_clock(), cpu_clock()
        result = fn(*args)
        return result, wall_clock() - wall, cpu_clock() - cpu

    for _ in range(warmup):
        run_once()
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        result, wall_s, cpu_s = run_once()
        walls.append(wall_s)
        cpus.append(cpu_s)
    pick = STATISTICS[statistic]
    return Timing(result, pick(walls), pick(cpus))
