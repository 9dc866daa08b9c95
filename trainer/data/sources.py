"""Training sources: each --data spec (a dppp dataset, or a NAME:PATH Re-ID folder) -> units of whole
identities, labelled 0..C-1, with the style vocabulary every source can label. No image is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dppp.dataset.curation import resolve_curation
from dppp.dataset.keys import parse_sample_key
from dppp.dataset.limits import ShardStorageConfig
from dppp.dataset.listing import committed_shards
from dppp.dataset.records import read_dataset_manifest
from dppp.foundation.errors import DataError, SettingError
from dppp.foundation.storage.urls import open_storage
from dppp.trainer.data.specs import parse_source, read_dataset

CAMID = "camid"


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
    storage: ShardStorageConfig
    curated: int = 0  # images left out because a curation file rejected them (train.data.curation)

    @property
    def style_vocab(self) -> dict[str, int]:
        """attribute -> number of classes, as `build_model` takes it."""
        return {name: len(values) for name, values in self.style_values.items()}

    @property
    def num_images(self) -> int:
        return sum(len(i.members) for u in self.units for i in u.identities)

    def describe(self) -> str:
        return (
            f"{len(self.sources)} source(s), {len(self.units)} units, {self.num_classes} identities, "
            f"{self.num_images} images" + (f" ({self.curated} dropped by curation)" if self.curated else "")
        )


def open_training_data(
    specs: Sequence[str],
    storage: ShardStorageConfig | None = None,
    folder_ids_per_unit: int = 8,
    curation: str = "off",
) -> TrainingData:
    """Resolve every data source into units, without reading an image.

    A dppp dataset contributes its committed shards only (records read, tars not opened); a Re-ID folder
    (NAME:PATH) its train split, in groups of `folder_ids_per_unit` identities. Pids are labelled 0..C-1
    in (source, pid) order, so two sources that both use pid 7 keep two identities. `curation`
    (train.data.curation: auto, off, or a curation file for the one dppp dataset) leaves out the images
    `dppp curate` rejected."""
    storage = storage or ShardStorageConfig()
    if not specs:
        raise SettingError("data", "no training data: give a dppp dataset URL or a NAME:PATH Re-ID folder")
    raw_units: list[tuple[int, str, str | None, str | None, list[tuple[int, tuple[str, ...], Any]]]] = []
    vocab_per_source: list[dict[str, set[str]]] = []
    curated = 0
    for source, spec in enumerate(specs):
        source = parse_source(spec)
        if source.is_dataset:
            units, vocab, dropped = _dataset_units(source.path, storage, _curation_for(curation, specs))
            curated += dropped
        else:
            units, vocab = _folder_units(spec, folder_ids_per_unit)
        raw_units += [(source, *u) for u in units]
        vocab_per_source.append(vocab)
    labels = {
        key: i for i, key in enumerate(sorted({(s, pid) for s, *_, ids in raw_units for pid, _, _ in ids}))
    }
    units = tuple(
        Unit(
            name,
            root,
            tar,
            tuple(Identity(labels[(s, pid)], members, camids) for pid, members, camids in ids),
        )
        for s, name, root, tar, ids in raw_units
    )
    # Only attributes every source can label: one without it could not supervise its style head.
    common = set.intersection(*(set(v) for v in vocab_per_source))
    style_values = {
        name: tuple(sorted(set().union(*(v[name] for v in vocab_per_source)), key=_value_order))
        for name in sorted(common)
    }
    return TrainingData(tuple(specs), units, len(labels), style_values, storage, curated)


def _value_order(value: str) -> tuple[int, Any]:
    return (0, int(value)) if value.lstrip("-").isdigit() else (1, value)


def _curation_for(curation: str, specs: Sequence[str]) -> str:
    """A curation file given by path judges one dataset: with several dppp sources it is ambiguous."""
    if curation not in ("auto", "off") and sum(parse_source(s).is_dataset for s in specs) > 1:
        raise SettingError(
            "train.data.curation",
            "a curation file judges one dataset, but several dppp datasets are given: use auto or off",
        )
    return curation


def _dataset_units(url: str, storage_config: ShardStorageConfig, curation: str = "off"):
    storage = open_storage(url, storage_config)
    manifest = read_dataset_manifest(storage)
    records = committed_shards(storage, check_tars=True)  # a lost or cut tar: refused before Ray starts
    judged = resolve_curation(curation, storage, storage_config) if records else None
    dropped = 0
    if not records:
        raise DataError(
            f"{storage.url}: no committed shard (generate the dataset first, or wait until one "
            "shard is committed)"
        )
    units = []
    for record in records:
        by_pid: dict[int, list[str]] = {}
        rejected = (
            judged.rejected_in(record.index, record.sha256, storage.url_for(record.tar)) if judged else ()
        )
        dropped += len(rejected)
        for key in record.keys:
            parsed = parse_sample_key(key)
            if not parsed:
                raise DataError(f"{storage.url_for(record.tar)}: sample key {key!r} is not p<pid>_v<view>")
            by_pid.setdefault(parsed[0], []).append(key)
        if sorted(by_pid) != sorted(record.pids):
            raise DataError(f"{storage.url_for(record.tar)}: its record's pids disagree with its keys")
        identities = [
            (pid, kept, None)
            for pid, keys in sorted(by_pid.items())
            if (
                kept := tuple(sorted(k for k in keys if k not in rejected))
            )  # an identity wholly rejected goes
        ]
        if identities:
            units.append((storage.url_for(record.tar), storage.url, record.tar, identities))
    return units, taxonomy_vocab(manifest.get("taxonomy"), storage.url), dropped


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
        vocab[CAMID] = camids
    return vocab


def _folder_units(spec: str, ids_per_unit: int):
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
    return units, {CAMID: {str(i.camid) for i in split.train}}
