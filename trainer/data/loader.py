"""DataLoaders over the batch streams: one per epoch, the next epoch's processes started early."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.utils.data

from trainer.config import DataConfig


def make_loader(stream, config: DataConfig, *, pin_memory: bool = False):
    """A DataLoader over a batch stream (batch_size=None: the stream's items are the batches)."""
    workers = config.num_workers
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=config.prefetch_batches if workers else None,
        persistent_workers=False,
        pin_memory=pin_memory,
        multiprocessing_context="fork" if workers else None,
    )


def prefetched_epochs(streams, config: DataConfig, *, pin_memory: bool = False):
    """(stream, batch iterator) per epoch, with the NEXT epoch's loader processes started as soon as the
    current epoch's first batch is in: they read their first units and fill their prefetch queues
    (bounded: prefetch_batches each) while this epoch trains, so an epoch boundary costs no start-up wait.

    Not earlier: started together, the two epochs' processes would both fill their identity pools (each
    reads several units before its first batch) on the same cores, and the current epoch's first batch,
    the one the training step is waiting for, would take twice as long (measured: 160 -> 400 ms with
    two loader processes on two cores)."""
    streams = iter(streams)
    current = next(streams, None)
    batches = iter(make_loader(current, config, pin_memory=pin_memory)) if current is not None else None
    while current is not None:
        upcoming = next(streams, None)
        started: list[Any] = []

        def start_upcoming(upcoming=upcoming, started=started) -> None:
            if upcoming is not None and not started:
                started.append(iter(make_loader(upcoming, config, pin_memory=pin_memory)))

        yield current, _after_first(batches, start_upcoming)
        start_upcoming()  # an epoch with no batch left (a resume at its end), or one left early
        current, batches = upcoming, (started[0] if started else None)


def _after_first(batches, on_first) -> Iterator[Any]:
    """The batches, calling `on_first()` once the first one has arrived (before handing it out)."""
    for n, batch in enumerate(batches):
        if n == 0:
            on_first()
        yield batch
