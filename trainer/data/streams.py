"""The batch streams: one rank's P x K batches of an epoch (PKBatchStream), and every image of its units
un-augmented (AllImagesStream, the pass that builds PDM's identity bank)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import IterableDataset

from dppp.trainer.data.config import DataConfig
from dppp.trainer.data.plan import PlannedBatch, plan_epoch, round_robin_take
from dppp.trainer.data.sources import TrainingData
from dppp.trainer.data.transforms import EvalTransform, ReidAugment, erase, normalise_batch  # noqa: I001 (here, not in __iter__: each epoch forks afresh)
from dppp.trainer.data.unit_reader import UnitReader, UnitRows


class PKBatchStream(IterableDataset):
    """One rank's batches of one epoch as an IterableDataset; each item is a whole P x K batch:

        {"pixel_values": float [P*K, 3, H, W], "pids": long [P*K], "style": {attr: long [P*K]},
         "keys": list of P*K sample keys / paths}

    Identities are contiguous (K images each). With DataLoader processes, each reads its own units
    (torch's get_worker_info); `skip` batches of the epoch (a resume point) are passed over undecoded."""

    def __init__(
        self,
        data: TrainingData,
        config: DataConfig,
        image_size: tuple[int, int],
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        skip: int = 0,
        augment: bool = True,
        style_attributes: Sequence[str] = (),
        texts: bool = False,
        captioners: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.data = data
        self.config = config
        self.image_size = tuple(image_size)
        self.seed, self.epoch, self.rank, self.world = seed, epoch, rank, world
        self.plan = plan_epoch(data, config, seed=seed, epoch=epoch, rank=rank, world=world)
        if not 0 <= skip <= self.plan.steps:
            raise ValueError(f"skip={skip} outside 0..{self.plan.steps}")
        self.skip = skip
        self.augment = augment
        self.reader = UnitReader(data, style_attributes=style_attributes, texts=texts, captioners=captioners)
        self.style_attributes = self.reader.style_attributes

    @property
    def steps(self) -> int:
        return self.plan.steps

    def __len__(self) -> int:
        return self.plan.steps - self.skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        if info is None and len(self.plan.units) > 1:
            # num_workers=0: this one process plays every planned loader process, in DataLoader's order.
            yield from self._interleaved()
            return
        yield from self.process_batches(info.id if info is not None else 0)

    def process_shares(self) -> list[int]:
        """Batches each planned loader process yields this epoch, after the resume's `skip`."""
        counts = [len(b) for b in self.plan.batches]
        skipped = round_robin_take(counts, self.skip)
        return [c - s for c, s in zip(counts, skipped, strict=True)]

    def process_batches(self, process: int) -> Iterator[dict[str, Any]]:
        """The batches of loader process `process`, past the resume's `skip`."""
        skipped = round_robin_take([len(b) for b in self.plan.batches], self.skip)[process]
        yield from self._process_batches(process, skipped)

    def _interleaved(self) -> Iterator[dict[str, Any]]:
        skipped = round_robin_take([len(b) for b in self.plan.batches], self.skip)
        streams = [self._process_batches(w, skipped[w]) for w in range(len(self.plan.units))]
        live = list(range(len(streams)))
        while live:
            for w in list(live):
                batch = next(streams[w], None)
                if batch is None:
                    live.remove(w)
                else:
                    yield batch

    def _process_batches(self, process: int, skipped: int) -> Iterator[dict[str, Any]]:
        transform = (
            ReidAugment(self.config.augment, self.image_size)
            if self.augment
            else EvalTransform(self.image_size)
        )
        unit_ids = self.plan.units[process]
        batches = self.plan.batches[process]
        # The last batch that needs each unit: its images are dropped right after it.
        last_use: dict[int, int] = {}
        for b, batch in enumerate(batches[skipped:], start=skipped):
            for pick in batch.picks:
                last_use[pick.unit] = b
        loaded: dict[int, UnitRows] = {}
        for b in range(skipped, len(batches)):
            batch = batches[b]
            for pick in batch.picks:
                if pick.unit not in loaded:
                    loaded[pick.unit] = self.reader.read(self.data.units[unit_ids[pick.unit]])
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, process, b, 0x4155])
            yield self._assemble(batch, loaded, unit_ids, transform, rng)
            for position in [p for p, last in last_use.items() if last == b]:
                loaded.pop(position, None)

    def _assemble(self, batch: PlannedBatch, loaded, unit_ids, transform, rng) -> dict[str, Any]:
        count = len(batch.picks) * max(len(p.images) for p in batch.picks)
        pixels = np.empty((count, *self.image_size, 3), dtype=np.uint8)
        erase_rects, pids, keys = [], [], []
        words: dict[str, list[str]] = {}
        style: dict[str, list[int]] = {name: [] for name in self.style_attributes}
        for pick in batch.picks:
            unit = self.data.units[unit_ids[pick.unit]]
            identity = unit.identities[pick.identity]
            rows = loaded[pick.unit][pick.identity]
            for i in pick.images:
                data, labels, text = rows[i]
                for name, value in text.items():
                    words.setdefault(name, []).append(value)
                where = f"{unit.name}: {identity.members[i]}"
                erase_rects.append(transform.pixels_into(pixels[len(pids)], data, rng, where))
                pids.append(identity.label)
                keys.append(identity.members[i])
                for name in self.style_attributes:
                    style[name].append(labels[name])
        return {
            "pixel_values": _normalised(pixels[: len(pids)], erase_rects),
            "pids": torch.tensor(pids, dtype=torch.long),
            "style": {name: torch.tensor(values, dtype=torch.long) for name, values in style.items()},
            "keys": keys,
            **words,
        }


def _normalised(pixels: np.ndarray, erase_rects) -> torch.Tensor:
    """The batch's uint8 pixels CLIP-normalised in one op, then its random-erasing rectangles zeroed.

    In a DataLoader process the float batch is written straight into shared memory: handing it to the
    training process then moves no bytes (torch would otherwise copy it there when it is sent)."""
    out = torch.empty((len(pixels), 3, *pixels.shape[1:3]), dtype=torch.float32)
    if torch.utils.data.get_worker_info() is not None:
        out.share_memory_()
    normalise_batch(pixels, out)
    for image, rect in zip(out, erase_rects, strict=True):
        if rect is not None:
            erase(image, rect)
    return out


class AllImagesStream(IterableDataset):
    """Every image of this rank's units (units[rank::world]), un-augmented, in batches of `batch_size`:
    the pass that builds PDM's identity bank. {"pixel_values", "pids"}; not P x K."""

    def __init__(
        self,
        data: TrainingData,
        image_size: tuple[int, int],
        *,
        rank: int,
        world: int,
        batch_size: int,
        style_attributes: Sequence[str] = (),
    ):
        super().__init__()
        self.data, self.image_size, self.batch_size = data, tuple(image_size), batch_size
        self.unit_ids = list(range(rank, len(data.units), world))
        self.reader = UnitReader(data, style_attributes=style_attributes)  # labels in each batch's "style"
        self.style_attributes = self.reader.style_attributes  # (the health report's)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.unit_ids[info.id :: info.num_workers] if info else self.unit_ids
        transform = EvalTransform(self.image_size)
        images, pids, styles = [], [], []

        def batch():
            out = {"pixel_values": torch.stack(images), "pids": torch.tensor(pids, dtype=torch.long)}
            if self.style_attributes:
                out["style"] = {
                    n: torch.tensor([s[n] for s in styles], dtype=torch.long) for n in self.style_attributes
                }
            return out

        for u in mine:
            unit = self.data.units[u]
            for identity, rows in zip(unit.identities, self.reader.read(unit), strict=True):
                for member, (data, style, _) in zip(identity.members, rows, strict=True):
                    images.append(transform(data, None, f"{unit.name}: {member}"))
                    pids.append(identity.label)
                    styles.append(style)
                    if len(images) == self.batch_size:
                        yield batch()
                        images, pids, styles = [], [], []
        if images:
            yield batch()
