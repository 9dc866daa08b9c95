"""DataLoaders over the batch streams: the training epochs of a phase fed by one set of loader processes
that persist across them (EpochsStream), a single pass by a plain DataLoader (make_loader)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.data
from torch.utils.data import IterableDataset

from dppp.trainer.data.config import DataConfig


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


class EpochsStream(IterableDataset):
    """Several epochs' batch streams walked by the same DataLoader processes, so an epoch boundary forks
    nothing: a process that has formed its last batch of one epoch goes straight on to reading its units
    of the next (filling its identity pool) while the training process still consumes the queued ones.

    DataLoader takes items from its processes strictly in turn. To keep each epoch's batches in exactly
    the order one DataLoader per epoch gives them (the order a resume's `skip` counts in), every process
    pads its share of an epoch with PAD items up to the epoch's largest share: round `r` of an epoch
    then holds the r-th batch of each process that has one, and the epoch ends on a round boundary.

    `make_stream(epoch)` builds an epoch's PKBatchStream; each process builds its own (the plan is
    cheap, and a plan kept for every epoch of a long run would not be)."""

    def __init__(self, make_stream: Callable[[int], Any], epochs: Sequence[int]):
        super().__init__()
        self.make_stream, self.epochs = make_stream, list(epochs)

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        if info is None:
            raise RuntimeError("EpochsStream runs in DataLoader processes (num_workers >= 1)")
        for epoch in self.epochs:
            stream = self.make_stream(epoch)
            shares = stream.process_shares()
            if len(shares) != info.num_workers:
                raise RuntimeError(
                    f"epoch {epoch} is planned for {len(shares)} loader processes, the DataLoader has "
                    f"{info.num_workers}"
                )
            sent = 0
            for batch in stream.process_batches(info.id):
                sent += 1
                yield batch
            for _ in range(max(shares) - sent):
                yield PAD


PAD = {"pad": True}  # a place-holder item (see EpochsStream); never reaches the training step


def epoch_batches(
    make_stream: Callable[[int], Any],
    epochs: Sequence[int],
    config: DataConfig,
    *,
    pin_memory: bool = False,
) -> Iterator[tuple[Any, Iterator[dict[str, Any]]]]:
    """(stream, its batches) for each of `epochs`, all fed by ONE set of loader processes that persist
    across the epochs (EpochsStream): no fork and no cold identity pool at an epoch boundary. The
    batches of each epoch are exactly those, in the order, of `make_loader(make_stream(epoch))`.

    An epoch's batches left unread (a loop that stopped early) are drained before the next epoch's."""
    epochs = list(epochs)
    if not config.num_workers:
        for epoch in epochs:
            stream = make_stream(epoch)
            yield stream, iter(make_loader(stream, config, pin_memory=pin_memory))
        return
    items = iter(make_loader(EpochsStream(make_stream, epochs), config, pin_memory=pin_memory))
    for epoch in epochs:
        stream = make_stream(epoch)
        shares = stream.process_shares()
        left = [max(shares) * len(shares)]  # this epoch's items, pads included

        def batches(left=left) -> Iterator[dict[str, Any]]:
            while left[0]:
                left[0] -= 1
                item = next(items)
                if not item.get("pad"):  # (a PAD arrives as a copy: compared by content)
                    yield item

        current = batches()
        yield stream, current
        for _ in current:  # drain what the caller left
            pass
