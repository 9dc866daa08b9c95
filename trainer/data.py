"""The streaming training loader: committed shards -> exact P x K identity-balanced batches.

    data = open_training_data(["s3://bucket/demo", "market1501:/data/market"], storage_config)
    stream = PKBatchStream(data, config.data, image_size, seed=0, epoch=3, rank=1, world=2)
    loader = make_loader(stream, config.data)            # batch_size=None: each item IS a batch
    for batch in loader: ...                              # exactly stream.steps batches, on every rank

The unit of streaming is a *unit*: a committed shard of a dppp dataset, or a group of identities of a
Re-ID folder. Units hold whole identities, so a batch can be assembled from whatever units one loader
process has read, without seeing any other process's data.

Everything about an epoch's batches is decided up front from the shards' commit records (which
identity, which of its images), without reading an image: `plan_epoch` shuffles the unit list with
(seed, epoch), gives each rank an equal, disjoint slice (Ray ranks are invisible to webdataset's own node
splitting, so the split is done here), deals the rank's units to its DataLoader processes, and plans each
process's batches. Because every rank can compute every other rank's plan, all ranks agree on
`steps` (the smallest rank's batch count) and each rank trims its plan to exactly that many batches: DDP
never waits on a rank that ran out. The same plan makes resume exact: a run restarted at batch b of an
epoch skips the first b batches of the plan without decoding them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import IterableDataset

from foundation.errors import DataError, SettingError
from pipeline.shards import READ_IMAGE_EXTS, read_shard
from pipeline.storage import StorageConfig, open_storage
from trainer.config import DataConfig
from trainer.transforms import EvalTransform, ReidAugment, erase, normalise_batch  # noqa: I001 (here, not in __iter__: each epoch forks afresh)

_KEY = re.compile(r"^p(\d+)_v(\d+)$")  # prompts.spec.sample_key(pid, view)
_CAMID = "camid"


# ------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class Identity:
    label: int  # 0..num_classes-1
    members: tuple[str, ...]  # sample keys in the shard (dppp) or image paths (folder), sorted
    camids: tuple[int, ...] | None = None  # folder datasets only: shards carry camid in each json


@dataclass(frozen=True)
class Unit:
    """What one loader process reads in one go: a committed shard, or a group of a folder's identities."""

    name: str  # for messages: the tar's URL, or 'market1501:/path#3'
    root: str | None  # the dppp dataset's storage URL (None for a folder)
    tar: str | None  # the tar's key under `root`
    identities: tuple[Identity, ...]


@dataclass(frozen=True)
class TrainingData:
    """Every source resolved: units, the pid -> label map's size, and the style vocabulary."""

    sources: tuple[str, ...]
    units: tuple[Unit, ...]
    num_classes: int
    style_values: dict[str, tuple[str, ...]]  # attribute -> its values in label order
    storage: StorageConfig

    @property
    def style_vocab(self) -> dict[str, int]:
        """attribute -> number of classes, as `build_model` takes it."""
        return {name: len(values) for name, values in self.style_values.items()}

    @property
    def num_images(self) -> int:
        return sum(len(i.members) for u in self.units for i in u.identities)

    def describe(self) -> str:
        return (f"{len(self.sources)} source(s), {len(self.units)} units, {self.num_classes} identities, "
                f"{self.num_images} images")  # fmt: skip


def is_folder_spec(spec: str) -> bool:
    """'market1501:/data/x' names a Re-ID folder; a URL or path names a dppp dataset."""
    from trainer.readers import READERS

    name, sep, rest = spec.partition(":")
    return bool(sep) and name.lower() in READERS and name.lower() != "synthetic" and not rest.startswith("//")


def open_training_data(specs: Sequence[str], storage: StorageConfig | None = None,
                       folder_ids_per_unit: int = 8) -> TrainingData:  # fmt: skip
    """Resolve every data source into units, without reading an image.

    A dppp dataset contributes its committed shards only (records read, tars not opened); a Re-ID folder
    (NAME:PATH) its train split, in groups of `folder_ids_per_unit` identities. Pids are labelled 0..C-1
    in (source, pid) order, so two sources that both use pid 7 keep two identities."""
    storage = storage or StorageConfig()
    if not specs:
        raise SettingError("data", "no training data: give a dppp dataset URL or a NAME:PATH Re-ID folder")
    raw_units: list[tuple[int, str, str | None, str | None, list[tuple[int, tuple[str, ...], Any]]]] = []
    vocab_per_source: list[dict[str, set[str]]] = []
    for source, spec in enumerate(specs):
        if spec.startswith("synthetic:"):
            spec = spec[len("synthetic:") :]
        if is_folder_spec(spec):
            units, vocab = _folder_units(spec, folder_ids_per_unit)
        else:
            units, vocab = _dataset_units(spec, storage)
        raw_units += [(source, *u) for u in units]
        vocab_per_source.append(vocab)
    labels = {key: i for i, key in enumerate(sorted({(s, pid) for s, *_, ids in raw_units for pid, _, _ in ids}))}
    units = tuple(
        Unit(name, root, tar, tuple(Identity(labels[(s, pid)], members, camids) for pid, members, camids in ids))
        for s, name, root, tar, ids in raw_units
    )
    # Only attributes every source can label: one without it could not supervise its style head.
    common = set.intersection(*(set(v) for v in vocab_per_source))
    style_values = {
        name: tuple(sorted(set().union(*(v[name] for v in vocab_per_source)), key=_value_order))
        for name in sorted(common)
    }
    return TrainingData(tuple(specs), units, len(labels), style_values, storage)


def _value_order(value: str) -> tuple[int, Any]:
    return (0, int(value)) if value.lstrip("-").isdigit() else (1, value)


def _dataset_units(url: str, storage_config: StorageConfig):
    from pipeline.records import committed_shards, read_dataset_manifest

    storage = open_storage(url, storage_config)
    manifest = read_dataset_manifest(storage)
    records = committed_shards(storage)
    if not records:
        raise DataError(f"{storage.url}: no committed shard (generate the dataset first, or wait until one "
                        "shard is committed)")  # fmt: skip
    units = []
    for record in records:
        by_pid: dict[int, list[str]] = {}
        for key in record.keys:
            match = _KEY.match(key)
            if not match:
                raise DataError(f"{storage.url_for(record.tar)}: sample key {key!r} is not p<pid>_v<view>")
            by_pid.setdefault(int(match.group(1)), []).append(key)
        if sorted(by_pid) != sorted(record.pids):
            raise DataError(f"{storage.url_for(record.tar)}: its record's pids disagree with its keys")
        identities = [(pid, tuple(sorted(keys)), None) for pid, keys in sorted(by_pid.items())]
        units.append((storage.url_for(record.tar), storage.url, record.tar, identities))
    return units, taxonomy_vocab(manifest.get("taxonomy"), storage.url)


def taxonomy_vocab(taxonomy: Any, where: str) -> dict[str, set[str]]:
    """Style values per attribute from dataset.json's taxonomy: every identity and view dimension, and
    camid from the camera table."""
    if not isinstance(taxonomy, dict):
        raise DataError(f"{where}: dataset.json has no taxonomy, so style labels cannot be built")
    vocab: dict[str, set[str]] = {}
    for level in ("identity", "view"):
        for name, dim in (taxonomy.get(level) or {}).items():
            values = dim.get("values") if isinstance(dim, dict) else None
            if isinstance(values, dict) and values:
                vocab[name] = {str(v) for v in values}
    cameras = taxonomy.get("cameras") or []
    camids = {str(c["camid"]) for c in cameras if isinstance(c, dict) and "camid" in c}
    if camids:
        vocab[_CAMID] = camids
    return vocab


def _folder_units(spec: str, ids_per_unit: int):
    from trainer.readers import read_dataset

    split = read_dataset(spec)
    by_pid: dict[int, list[Any]] = {}
    for item in split.train:
        by_pid.setdefault(item.pid, []).append(item)
    if not by_pid:
        raise DataError(f"{spec}: the train split holds no image")
    identities = []
    for pid, items in sorted(by_pid.items()):
        items = sorted(items, key=lambda item: item.path)
        identities.append((pid, tuple(i.path for i in items), tuple(i.camid for i in items)))
    units = [
        (f"{spec}#{n}", None, None, identities[start : start + ids_per_unit])
        for n, start in enumerate(range(0, len(identities), ids_per_unit))
    ]
    return units, {_CAMID: {str(i.camid) for i in split.train}}


# --------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Pick:
    unit: int  # position in the process's unit list
    identity: int  # index in that unit's identities
    images: tuple[int, ...]  # K indices into the identity's members (repeats when it has fewer than K)


@dataclass(frozen=True)
class PlannedBatch:
    ready_after: int  # the process has read its units 0..ready_after when this batch is formed
    picks: tuple[Pick, ...]  # P picks of distinct identities


@dataclass(frozen=True)
class EpochPlan:
    units: tuple[tuple[int, ...], ...]  # per DataLoader process: indices into TrainingData.units
    batches: tuple[tuple[PlannedBatch, ...], ...]  # per process, already trimmed to `steps` in all
    steps: int  # batches this rank (and every rank) runs this epoch


def shards_for_rank(num_units: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This rank's units for the epoch: a (seed, epoch) shuffle of all units cut into `world` equal,
    disjoint slices. The num_units % world left over are skipped this epoch (other ones next epoch)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    per_rank = num_units // world
    if per_rank == 0:
        raise DataError(f"{num_units} shard(s) cannot feed {world} training workers: each needs one at least")
    order = np.random.default_rng([seed, epoch, 0x5348]).permutation(num_units)
    return [int(u) for u in order[rank * per_rank : (rank + 1) * per_rank]]


def plan_process(identity_sizes: Sequence[Sequence[int]], rng: np.random.Generator, ids_per_batch: int,
                 images_per_id: int, pool_identities: int) -> list[PlannedBatch]:  # fmt: skip
    """The batches one loader process forms from its units, given only each identity's image count.

    Each identity's images are shuffled and cut into chunks of K (an identity with fewer than K images
    gives one chunk drawn with replacement; a remainder smaller than K waits for another epoch). Units
    are read in order into a pool; while the pool holds at least `pool_identities` identities (at the end:
    at least P), a batch takes one chunk from each of the P identities with the most chunks left (random
    among ties), which is the greedy that forms the most batches of P distinct identities."""
    P, K = ids_per_batch, images_per_id
    pool: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    batches = []
    for position, sizes in enumerate(identity_sizes):
        for index, size in enumerate(sizes):
            if size <= 0:
                continue
            if size >= K:
                order = rng.permutation(size)
                pool[(position, index)] = [tuple(int(i) for i in order[c * K : (c + 1) * K]) for c in range(size // K)]
            else:
                pool[(position, index)] = [tuple(int(i) for i in np.sort(rng.choice(size, K, replace=True)))]
        threshold = P if position == len(identity_sizes) - 1 else max(P, pool_identities)
        while len(pool) >= threshold:
            keys = list(pool)
            shuffled = rng.permutation(len(keys))
            chosen = sorted(shuffled, key=lambda j: -len(pool[keys[j]]))[:P]
            picks = []
            for j in sorted(chosen):  # identity order in the batch: the order they entered the pool
                key = keys[j]
                picks.append(Pick(key[0], key[1], pool[key].pop()))
                if not pool[key]:
                    del pool[key]
            batches.append(PlannedBatch(position, tuple(picks)))
    return batches


def round_robin_take(counts: Sequence[int], steps: int, start: int = 0) -> list[int]:
    """How many batches each DataLoader process yields within batches [start, start+steps) of the
    order DataLoader returns them in (round robin over the processes that still have one)."""
    taken, n = [0] * len(counts), 0
    while n < start + steps:
        moved = False
        for w, count in enumerate(counts):
            if taken[w] < count and n < start + steps:
                taken[w] += 1
                n += 1
                moved = True
        if not moved:
            raise ValueError(f"only {sum(counts)} batches, {start + steps} wanted")
    if start:
        before = round_robin_take(counts, start)
        return [t - b for t, b in zip(taken, before, strict=True)]
    return taken


def _rank_batches(data: TrainingData, config: DataConfig, seed: int, epoch: int, rank: int, world: int):
    processes = max(1, config.num_workers)
    mine = shards_for_rank(len(data.units), epoch, seed, rank, world)
    per_process = [tuple(mine[w::processes]) for w in range(processes)]
    pool = config.pool_identities or 2 * config.ids_per_batch
    batches = []
    for w, units in enumerate(per_process):
        sizes = [[len(i.members) for i in data.units[u].identities] for u in units]
        rng = np.random.default_rng([seed, epoch, rank, w, 0x504B])
        batches.append(plan_process(sizes, rng, config.ids_per_batch, config.images_per_id, pool))
    return per_process, batches


def plan_epoch(data: TrainingData, config: DataConfig, *, seed: int, epoch: int, rank: int,
               world: int) -> EpochPlan:  # fmt: skip
    """This rank's plan for `epoch`: its units per loader process and their batches, trimmed so that
    every rank runs the same number of steps (the smallest rank's count)."""
    counts = []
    mine = None
    for r in range(world):
        per_process, batches = _rank_batches(data, config, seed, epoch, r, world)
        counts.append(sum(len(b) for b in batches))
        if r == rank:
            mine = (per_process, batches)
    steps = min(counts)
    if steps == 0:
        raise DataError(
            f"epoch {epoch}: a training worker can form no batch of {config.ids_per_batch} identities from "
            f"its share ({len(data.units) // world} of {len(data.units)} units, {data.num_classes} identities, "
            f"{max(1, config.num_workers)} loader process(es) each): lower data.ids_per_batch, "
            "data.num_workers or the number of workers, or add data"
        )
    per_process, batches = mine
    keep = round_robin_take([len(b) for b in batches], steps)
    trimmed = tuple(tuple(b[:n]) for b, n in zip(batches, keep, strict=True))
    return EpochPlan(tuple(per_process), trimmed, steps)


# ------------------------------------------------------------------------------------------- stream


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
            value = meta.get(_CAMID) if name == _CAMID else (meta.get("attributes") or {}).get(name)
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
