"""`batch_size: auto`: the probe's choice, its limits, and the renderer using it."""

from __future__ import annotations

import itertools

import pytest

from dppp.pipeline.renderers.batch_probe import ProbeResult, candidate_sizes, probe_batch_sizes


class FakeGPU:
    """run_batch + clock for the probe: `seconds(n)` per batch of n; out of memory above `memory`."""

    def __init__(self, seconds, memory=10**9):
        self.seconds, self.memory = seconds, memory
        self.now = 0.0
        self.calls: list[int] = []

    def run(self, n: int) -> None:
        self.calls.append(n)
        if n > self.memory:
            raise MemoryError(f"out of memory at {n}")
        self.now += self.seconds(n)

    def clock(self) -> float:
        return self.now


def probe(gpu: FakeGPU, sizes, **options) -> ProbeResult:
    return probe_batch_sizes(
        gpu.run, sizes, clock=gpu.clock, is_out_of_memory=lambda e: isinstance(e, MemoryError), **options
    )


def test_candidates_double_up_to_the_maximum_inclusive():
    assert candidate_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert candidate_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
    assert candidate_sizes(1) == [1]
    assert candidate_sizes(64, start=8) == [8, 16, 32, 64]


def test_the_probe_stops_once_a_larger_batch_gains_nothing():
    # A launch-bound GPU: 0.1 s fixed + 0.01 s per image -> the rate saturates near 100 images/s.
    gpu = FakeGPU(lambda n: 0.1 + 0.01 * n)
    result = probe(gpu, candidate_sizes(1024))
    rates = result.images_per_s
    assert result.chosen == max(rates, key=rates.get)
    assert 1024 not in rates  # stopped before trying everything
    last = list(rates)[-1]
    assert rates[last] < rates[list(rates)[-2]] * 1.03  # ... because the last step gained < 3%
    assert all(calls == 2 for calls in (gpu.calls.count(n) for n in rates))  # warm-up + timed


def test_out_of_memory_ends_the_probe_and_the_best_fitting_size_wins():
    gpu = FakeGPU(lambda n: 1.0 + 0.001 * n, memory=40)
    result = probe(gpu, candidate_sizes(64))
    assert result.out_of_memory_at == 64 and result.chosen == 32
    assert "out of memory at 64" in result.describe() and result.describe().startswith("batch size 32")


def test_out_of_memory_at_the_smallest_size_is_a_clear_error():
    with pytest.raises(RuntimeError, match="out of memory even at batch size 4"):
        probe(FakeGPU(lambda n: 1.0, memory=2), [4, 8])


def test_any_other_error_is_not_swallowed():
    def broken(n):
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        probe_batch_sizes(broken, [1, 2], is_out_of_memory=lambda e: False)


def test_a_synchronize_hook_brackets_each_timed_batch():
    events: list[str] = []
    ticks = itertools.count()
    probe_batch_sizes(
        lambda n: events.append(f"run{n}"),
        [2],
        synchronize=lambda: events.append("sync"),
        clock=lambda: float(next(ticks)),
    )
    assert events == ["run2", "sync", "run2", "sync"]
