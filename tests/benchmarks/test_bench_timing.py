"""benchmarks/timing.py, the timing helper every benchmark script uses: runs, statistics, setup."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def timing():
    return load_benchmark("timing")


class Clock:
    """A clock the test moves by hand: timings are exact, and nothing sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_runs_warmup_then_repeats_and_returns_the_last_result(timing):
    wall, cpu = Clock(), Clock()
    calls = []

    def fn():
        calls.append(len(calls))
        wall.advance(0.5)
        cpu.advance(0.25)
        return len(calls)

    result, wall_s, cpu_s = timing.timed(fn, repeats=3, warmup=2, wall_clock=wall, cpu_clock=cpu)
    assert calls == [0, 1, 2, 3, 4] and result == 5
    assert (wall_s, cpu_s) == (0.5, 0.25)


def test_setup_runs_untimed_before_each_run_and_feeds_fn(timing):
    wall = Clock()
    made = []

    def setup():
        wall.advance(10.0)  # outside the timing: must not show in wall_s
        made.append(object())
        return made[-1]

    def fn(fresh):
        wall.advance(1.0)
        return fresh

    result = timing.timed(fn, repeats=2, warmup=1, setup=setup, wall_clock=wall)
    assert len(made) == 3 and result.result is made[-1]
    assert result.wall_s == 1.0


def test_median_and_best_pick_their_statistic(timing):
    def runs(wall_s, cpu_s):
        wall, cpu = Clock(), Clock()
        steps = iter(zip(wall_s, cpu_s, strict=True))

        def fn():
            w, c = next(steps)
            wall.advance(w)
            cpu.advance(c)

        return {"fn": fn, "wall_clock": wall, "cpu_clock": cpu}

    # Wall and CPU minima are taken separately: they may come from different runs. (Binary fractions:
    # differences of the clock's readings stay exact.)
    median = timing.timed(**runs([3.0, 0.5, 1.0], [0.25, 0.5, 0.125]), repeats=3)
    best = timing.timed(**runs([3.0, 0.5, 1.0], [0.25, 0.5, 0.125]), repeats=3, statistic="best")
    assert (median.wall_s, median.cpu_s) == (1.0, 0.25)
    assert (best.wall_s, best.cpu_s) == (0.5, 0.125)


def test_the_default_clocks_measure_this_process(timing):
    busy = timing.timed(lambda: sum(i * i for i in range(200_000)))
    assert busy.cpu_s > 0 and busy.wall_s > 0 and busy.result == sum(i * i for i in range(200_000))


def test_bad_arguments_are_refused(timing):
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        timing.timed(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="statistic must be one of"):
        timing.timed(lambda: None, statistic="mean")
