"""Data specs: how a command names its data, and reading the Re-ID split a spec names.

    runs/demo/dataset, s3://bucket/ds         a dppp dataset (a local path or storage URL)
    synthetic:s3://bucket/ds                  the same, named: `dppp eval` takes NAME:PATH only
    market1501:/data/Market-1501-v15.09.15    a Re-ID benchmark folder, read by the named reader

`--data` of training and pretraining takes any of them (`parse_source`); `--data` of evaluation NAME:PATH only
(`parse_dataset_spec`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from dppp.foundation.errors import UserError
from dppp.trainer.data.readers import (
    ReidSplit,
    read_cuhk03_np,
    read_dukemtmc,
    read_market1501,
    read_msmt17,
    read_synthetic,
)

SYNTHETIC = "synthetic"  # the name of a dppp dataset in a NAME:PATH spec

FOLDER_READERS: dict[str, Callable[[str], ReidSplit]] = {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "msmt17": read_msmt17,
    "cuhk03-labeled": lambda root: read_cuhk03_np(root, "labeled"),
    "cuhk03-detected": lambda root: read_cuhk03_np(root, "detected"),
}
NAMES = (*FOLDER_READERS, SYNTHETIC)


class DataSpec(NamedTuple):
    name: str  # a folder reader's name, or SYNTHETIC for a dppp dataset
    path: str  # the folder, or the dataset's local path or storage URL

    @property
    def is_dataset(self) -> bool:
        """A dppp dataset (committed shards on storage), not a Re-ID folder."""
        return self.name == SYNTHETIC


def parse_dataset_spec(spec: str) -> DataSpec:
    """'NAME:PATH' -> (name, path); the name must be a known reader. The path may itself hold '://'."""
    name, sep, path = str(spec).partition(":")
    name = name.strip().lower()
    if not sep or not path.strip() or not name:
        raise UserError(f"dataset {spec!r}: expected NAME:PATH, e.g. market1501:/data/Market-1501-v15.09.15")
    if name not in NAMES:
        raise UserError(f"dataset {spec!r}: unknown name {name!r} (known: {', '.join(NAMES)})")
    return DataSpec(name, path.strip())


def parse_source(spec: str) -> DataSpec:
    """A --data source: NAME:PATH of a Re-ID folder or of a dppp dataset (synthetic:URL), else a dppp
    dataset's path or URL as it is (s3://... is a URL, not NAME:PATH)."""
    name, sep, rest = spec.partition(":")
    if sep and name.lower() == SYNTHETIC:
        return DataSpec(SYNTHETIC, rest)
    if sep and name.lower() in FOLDER_READERS and not rest.startswith("//"):
        return DataSpec(name.lower(), rest)
    return DataSpec(SYNTHETIC, spec)


def dataset_location(spec: str) -> str:
    """The path or URL of the dppp dataset a --data source names ('synthetic:' dropped); a folder's spec
    as it is."""
    source = parse_source(spec)
    return source.path if source.is_dataset else spec


def read_dataset(spec: str, **synthetic_options: Any) -> ReidSplit:
    """Read 'NAME:PATH' (names: market1501, dukemtmc, msmt17, cuhk03-labeled, cuhk03-detected, synthetic).
    `synthetic_options` (seed, queries_per_camera, held_out_pids, storage_config) apply to synthetic only."""
    name, path = parse_dataset_spec(spec)
    if name == SYNTHETIC:
        return read_synthetic(path, **synthetic_options)
    return FOLDER_READERS[name](os.path.expanduser(path))
