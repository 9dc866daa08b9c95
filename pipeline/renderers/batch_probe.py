"""Choosing a renderer's batch size by measurement: `generate.renderer.batch_size: auto`.

Larger batches fill the GPU better until it is saturated or out of memory; where that point lies depends
on the card, the model, the image size and the runtime options, so it is measured rather than guessed.
Sizes are tried in increasing order (powers of two up to the configured maximum): each gets one untimed
batch (allocator and kernel selection warm-up) and one timed batch; the probe stops at the first size
that runs out of memory or gains less than `min_gain` over the best so far, since past saturation a
larger batch only costs memory. The fastest size measured wins.

The probe runs eagerly, before any torch.compile: compiling each tried shape would cost a minute apiece,
and a compiled graph needs no more memory than the eager one it replaces. The chosen size decides the
dataset's bytes (batch composition changes floating-point results), so the driver records it in
dataset.json and every worker, and every rerun, uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ProbeResult:
    chosen: int
    images_per_s: dict[int, float] = field(default_factory=dict)  # size -> measured rate
    out_of_memory_at: int | None = None

    def describe(self) -> str:
        rates = ", ".join(f"{size}: {rate:.2f}" for size, rate in self.images_per_s.items())
        oom = f"; out of memory at {self.out_of_memory_at}" if self.out_of_memory_at else ""
        return f"batch size {self.chosen} (images/s by batch size: {rates}{oom})"


def candidate_sizes(maximum: int, start: int = 1) -> list[int]:
    """Powers of two from `start` up to `maximum`, and `maximum` itself."""
    sizes = []
    size = start
    while size < maximum:
        sizes.append(size)
        size *= 2
    return sizes + [maximum]


def probe_batch_sizes(
    run_batch: Callable[[int], object],
    sizes: list[int],
    *,
    synchronize: Callable[[], None] = lambda: None,
    is_out_of_memory: Callable[[BaseException], bool] = lambda exc: False,
    release_memory: Callable[[], None] = lambda: None,
    min_gain: float = 0.03,
    clock: Callable[[], float] = time.perf_counter,
) -> ProbeResult:
    """Time `run_batch(n)` for each size in order; return the fastest size that fits."""
    rates: dict[int, float] = {}
    oom_at = None
    for size in sizes:
        try:
            run_batch(size)  # warm-up: allocator growth, kernel choice
            synchronize()
            started = clock()
            run_batch(size)
            synchronize()
            elapsed = clock() - started
        except Exception as exc:  # only an out-of-memory error ends the probe quietly
            if not is_out_of_memory(exc):
                raise
            oom_at = size
            release_memory()
            break
        rate = size / max(elapsed, 1e-9)
        best = max(rates.values(), default=0.0)
        rates[size] = rate
        if best and rate < best * (1 + min_gain):
            break
    if not rates:
        raise RuntimeError(f"the renderer runs out of memory even at batch size {sizes[0]}")
    chosen = max(rates, key=rates.get)
    return ProbeResult(chosen, rates, oom_at)
