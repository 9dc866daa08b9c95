"""The batch streams: one rank's P x K batches of an epoch (PKBatchStream), and every image of its units
un-augmented (AllImagesStream, the pass that builds PDM's identity bank)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import IterableDataset

from foundation.errors import DataError
from pipeline.shards import READ_IMAGE_EXTS, read_shard
from pipeline.storage.urls import open_storage
from trainer.config import DataConfig
from trainer.data.plan import PlannedBatch, plan_epoch, round_robin_take
from trainer.data.sources import CAMID, TrainingData, Unit
from trainer.transforms import EvalTransform, ReidAugment, erase, normalise_batch  # noqa: I001 (here, not in __iter__: each epoch forks afresh)


class PKBatchStream(IterableDataset):
    """One rank's batches of one epoch as an IterableDataset; each item is a whole P x K batch:

        {"pixel_values": float [P*K, 3, H, W], "pids": long [P*K], "style": {attr: long [P*K]},
         "keys": list of P*K sample keys / paths}

    Identities are contiguous (K images each). With DataLoader processes, each reads its own units
    (torch's get_worker_info); `skip` batches of the epoch (a resume point) are passed over undecoded."""

    def __init__(self, data: TrainingData, config: DataConfig, image_size: tuple[int, int], *, seed: int,
                 epoch: int, rank: int = 0, world: int = 1, skip: int = 0, augment: bool = True,
                 style_attributes: Sequence[str] = (), texts: bool = False,
                 captioners: dict[str, Any] | None = None):  # fmt: skip
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
        missing = [a for a in style_attributes if a not in data.style_values]
        if missing:
            raise DataError(f"style attribute(s) {missing} are not labelled in every training source "
                            f"(labelled: {sorted(data.style_values)})")  # fmt: skip
        self.style_attributes = tuple(style_attributes)
        self.texts = texts  # each sample's prompt (its `txt` member) goes into the batch: image-text pairs
        # dataset URL -> prompts.captions.AppearanceCaptioner: each sample's appearance caption, from its json
        self.captioners = dict(captioners or {})

    @property
    def steps(self) -> int:
        return self.plan.steps

    def __len__(self) -> int:
        return self.plan.steps - self.skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        process = info.id if info is not None else 0
        if info is None and len(self.plan.units) > 1:
            # num_workers=0: this one process plays every planned loader process, in DataLoader's order.
            yield from self._interleaved()
            return
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
        transform = ReidAugment(self.config.augment, self.image_size) if self.augment else EvalTransform(self.image_size)
        unit_ids = self.plan.units[process]
        batches = self.plan.batches[process]
        # The last batch that needs each unit: its images are dropped right after it.
        last_use: dict[int, int] = {}
        for b, batch in enumerate(batches[skipped:], start=skipped):
            for pick in batch.picks:
                last_use[pick.unit] = b
        loaded: dict[int, list[list[tuple[bytes, dict[str, int], str | None]]]] = {}
        for b in range(skipped, len(batches)):
            batch = batches[b]
            for pick in batch.picks:
                if pick.unit not in loaded:
                    loaded[pick.unit] = self._load_unit(self.data.units[unit_ids[pick.unit]])
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, process, b, 0x4155])
            yield self._assemble(batch, loaded, unit_ids, transform, rng)
            for position in [p for p, last in last_use.items() if last == b]:
                loaded.pop(position, None)

    def _load_unit(self, unit: Unit):
        """Per identity, per member: (encoded image, style labels, prompt or None). Streams the shard once."""
        texts = getattr(self, "texts", False)
        captioner = getattr(self, "captioners", {}).get(unit.root)
        if unit.tar is None:
            if texts:
                raise DataError(f"{unit.name}: a Re-ID folder has no prompts; image-text pretraining needs dppp "
                                "shards, whose samples carry their prompt (txt)")  # fmt: skip
            return [[(_read_file(path), self._folder_style(camid), {}) for path, camid in
                     zip(ident.members, ident.camids or (), strict=True)] for ident in unit.identities]  # fmt: skip
        storage = open_storage(unit.root, self.data.storage)
        samples = {}
        wanted = READ_IMAGE_EXTS | ({"json"} if self.style_attributes else set())  # json only for style labels
        wanted |= {"txt"} if texts else set()
        wanted |= {"json"} if captioner else set()
        with storage.open_read(unit.tar) as stream:
            for sample in read_shard(stream, include=wanted):
                samples[sample["__key__"]] = sample
        out = []
        for ident in unit.identities:
            rows = []
            for key in ident.members:
                sample = samples.get(key)
                image = next((sample[ext] for ext in ("jpg", "jpeg", "png", "webp") if sample and ext in sample), None)
                if image is None or (self.style_attributes and "json" not in sample):
                    raise DataError(f"{unit.name}: sample {key!r} listed in its record lacks an image or json")
                style = self._sample_style(sample["json"], f"{unit.name}: sample {key!r}") if self.style_attributes else {}
                text = sample.get("txt") if texts else None
                if texts and not (isinstance(text, str) and text.strip()):
                    raise DataError(f"{unit.name}: sample {key!r} has no prompt (txt member); image-text "
                                    "pretraining needs a prompt with every image")  # fmt: skip
                words = {"texts": text} if texts else {}
                if captioner:
                    attributes = (sample.get("json") or {}).get("attributes")
                    if not isinstance(attributes, dict):
                        raise DataError(f"{unit.name}: sample {key!r} records no attributes to caption")
                    words["captions"] = captioner(attributes)
                rows.append((image, style, words))
            out.append(rows)
        return out

    def _sample_style(self, meta: dict[str, Any], where: str) -> dict[str, int]:
        labels = {}
        for name in self.style_attributes:
            value = meta.get(CAMID) if name == CAMID else (meta.get("attributes") or {}).get(name)
            labels[name] = self._style_label(name, value, where)
        return labels

    def _folder_style(self, camid: int) -> dict[str, int]:
        return {name: self._style_label(name, camid, "folder image") for name in self.style_attributes}

    def _style_label(self, name: str, value: Any, where: str) -> int:
        values = self.data.style_values[name]
        try:
            return values.index(str(value))
        except ValueError:
            raise DataError(f"{where}: {name}={value!r} is not in the dataset's vocabulary") from None

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


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None


class AllImagesStream(IterableDataset):
    """Every image of this rank's units (units[rank::world]), un-augmented, in batches of `batch_size`:
    the pass that builds PDM's identity bank. {"pixel_values", "pids"}; not P x K."""

    def __init__(self, data: TrainingData, image_size: tuple[int, int], *, rank: int, world: int,
                 batch_size: int, style_attributes: Sequence[str] = ()):  # fmt: skip
        super().__init__()
        self.data, self.image_size, self.batch_size = data, tuple(image_size), batch_size
        self.unit_ids = list(range(rank, len(data.units), world))
        self.style_attributes = tuple(style_attributes)  # labels in each batch's "style" (the health report's)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.unit_ids[info.id :: info.num_workers] if info else self.unit_ids
        stream = PKBatchStream.__new__(PKBatchStream)  # reuse its unit reader without planning an epoch
        stream.data, stream.style_attributes, stream.texts = self.data, self.style_attributes, False
        transform = EvalTransform(self.image_size)
        images, pids, styles = [], [], []

        def batch():
            out = {"pixel_values": torch.stack(images), "pids": torch.tensor(pids, dtype=torch.long)}
            if self.style_attributes:
                out["style"] = {n: torch.tensor([s[n] for s in styles], dtype=torch.long) for n in self.style_attributes}
            return out

        for u in mine:
            unit = self.data.units[u]
            for identity, rows in zip(unit.identities, stream._load_unit(unit), strict=True):
                for member, (data, style, _) in zip(identity.members, rows, strict=True):
                    images.append(transform(data, None, f"{unit.name}: {member}"))
                    pids.append(identity.label)
                    styles.append(style)
                    if len(images) == self.batch_size:
                        yield batch()
                        images, pids, styles = [], [], []
        if images:
            yield batch()
