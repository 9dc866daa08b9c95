"""benchmarks/timing.py, the timing helper every benchmark script uses: runs, statistics, setup."""

from __future__ import annotations

import time

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def timing():
    return load_benchmark("timing")


def test_runs_warmup_then_repeats_and_returns_the_last_result(timing):
    calls = []
    result, wall_s, cpu_s = timing.timed(lambda: calls.append(len(calls)) or len(calls), repeats=3, warmup=2)
    assert calls == [0, 1, 2, 3, 4] and result == 5
    assert wall_s >= 0 and cpu_s >= 0


def test_setup_runs_untimed_before_each_run_and_feeds_fn(timing):
    made = []

    def setup():
        time.sleep(0.2)  # outside the timing: must not show in wall_s
        made.append(object())
        return made[-1]

    result = timing.timed(lambda fresh: fresh, repeats=2, warmup=1, setup=setup)
    assert len(made) == 3 and result.result is made[-1]
    assert result.wall_s < 0.1


def test_median_and_best_pick_their_statistic(timing):
    def runs(durations):
        durations = iter(durations)
        return lambda: time.sleep(next(durations))

    # Wide gaps between the runs, so a busy shared machine cannot blur which one was picked.
    median = timing.timed(runs([0.3, 0.0, 0.1]), repeats=3)
    best = timing.timed(runs([0.3, 0.0, 0.1]), repeats=3, statistic="best")
    assert 0.1 <= median.wall_s < 0.25  # the middle run, neither extreme
    assert best.wall_s < 0.08  # the fastest run
    # Sleeping costs wall time, not CPU time; busy work costs both.
    assert median.cpu_s < 0.08
    busy = timing.timed(lambda: sum(i * i for i in range(200_000)))
    assert busy.cpu_s > 0 and busy.result == sum(i * i for i in range(200_000))


def test_bad_arguments_are_refused(timing):
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        timing.timed(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="statistic must be one of"):
        timing.timed(lambda: None, statistic="mean")
