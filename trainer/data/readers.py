"""Readers for Re-ID benchmark folders and for synthetic splits of dppp's own datasets.

Every reader returns a `ReidSplit(name, train, query, gallery)` of `ReidItem(path, pid, camid)`, with items
sorted by path so that the same folder always gives the same split.

Conventions, as the standard toolkits (torchreid, fast-reid) read these folders:
- camid is the dataset's own camera number as written in the file name (1-based for every real benchmark:
  Market `c1`..`c6`, Duke `c1`..`c8`, CUHK03-NP `c1`/`c2`, MSMT17 the 3rd name field `01`..`15`), and the
  virtual camera id of the taxonomy for synthetic data. The metrics only compare camids for equality.
- pid -1 (junk boxes) is dropped everywhere; pid 0 (distractors) is kept in the gallery only, where it is a
  wrong answer for every query (Market-1501 gallery: 19,732 files -> 15,913 entries).
- pids are the dataset's own, not relabelled: relabelling to 0..N-1 for a classifier is the trainer's job.

`trainer.data.specs.read_dataset("market1501:/data/Market-1501-v15.09.15")` picks the reader by name.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dppp.foundation.errors import DataError

# PIL, the shard reader and storage are imported inside the functions that read images:
# trainer/training/config.py imports this module (through specs.py), and loading a config must not pay for
# them.

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
JUNK_PID = -1
DISTRACTOR_PID = 0


@dataclass(frozen=True)
class ReidItem:
    path: str  # image file; for synthetic data "<shard>#<sample key>" (the sample inside its tar shard)
    pid: int
    camid: int


@dataclass(frozen=True)
class ReidSplit:
    name: str
    train: tuple[ReidItem, ...]
    query: tuple[ReidItem, ...]
    gallery: tuple[ReidItem, ...]

    def stats(self) -> dict[str, dict[str, int]]:
        """Images, identities and cameras per part: what a loader prints to show it read the right thing."""
        return {
            part: {
                "images": len(items),
                "pids": len({item.pid for item in items}),
                "cameras": len({item.camid for item in items}),
            }
            for part, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery))
        }


# ---- folder benchmarks named Market-style: <pid>_c<cam>...  ------------------------------------------


@dataclass(frozen=True)
class _Naming:
    dataset: str
    pattern: re.Pattern[str]  # groups: pid, camid
    example: str


MARKET1501 = _Naming(
    "Market-1501", re.compile(r"^(-?\d+)_c(\d+)s\d+_\d+_\d+\.jpg$"), "0002_c1s1_000451_03.jpg"
)
DUKEMTMC = _Naming("DukeMTMC-reID", re.compile(r"^(-?\d+)_c(\d+)_f\d+\.jpg$"), "0005_c2_f0046985.jpg")
CUHK03_NP = _Naming("CUHK03-NP", re.compile(r"^(-?\d+)_c(\d+)_\d+\.(?:png|jpg)$"), "0001_c1_1.png")

FOLDER_PARTS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def read_market1501(root: str | os.PathLike) -> ReidSplit:
    """Market-1501: bounding_box_train/, query/, bounding_box_test/ with names like 0002_c1s1_000451_03.jpg."""
    return _read_folder_benchmark("market1501", Path(root), MARKET1501)


def read_dukemtmc(root: str | os.PathLike) -> ReidSplit:
    """DukeMTMC-reID: the Market layout, names like 0005_c2_f0046985.jpg."""
    return _read_folder_benchmark("dukemtmc", Path(root), DUKEMTMC)


def read_cuhk03_np(root: str | os.PathLike, variant: str = "labeled") -> ReidSplit:
    """CUHK03-NP (the new protocol, 767/700 identities): <root>/labeled/ or <root>/detected/, each in the
    Market layout with names like 0001_c1_1.png. `root` may also be the labeled/ or detected/ folder."""
    if variant not in ("labeled", "detected"):
        raise ValueError(f"CUHK03-NP variant must be 'labeled' or 'detected', got {variant!r}")
    root = Path(root)
    folder = root / variant
    if not folder.is_dir():
        if root.name.lower() == variant and all((root / sub).is_dir() for sub in FOLDER_PARTS.values()):
            folder = root
        else:
            _require_dir(root, "a CUHK03-NP folder")
            raise DataError(
                f"{root} is not a CUHK03-NP folder: expected a '{variant}/' subfolder "
                f"(with {', '.join(FOLDER_PARTS.values())} inside)"
            )
    return _read_folder_benchmark(f"cuhk03-{variant}", folder, CUHK03_NP)


def _read_folder_benchmark(name: str, root: Path, naming: _Naming) -> ReidSplit:
    _require_dir(root, f"a {naming.dataset} folder")
    missing = [sub for sub in FOLDER_PARTS.values() if not (root / sub).is_dir()]
    if missing:
        raise DataError(
            f"{root} is not a {naming.dataset} folder: missing {', '.join(s + '/' for s in missing)} "
            f"(expected {', '.join(s + '/' for s in FOLDER_PARTS.values())})"
        )
    parts = {part: _read_named_images(root / sub, naming) for part, sub in FOLDER_PARTS.items()}
    return ReidSplit(
        name,
        train=tuple(item for item in parts["train"] if item.pid != DISTRACTOR_PID),
        query=tuple(item for item in parts["query"] if item.pid != DISTRACTOR_PID),
        gallery=tuple(parts["gallery"]),
    )


def _read_named_images(folder: Path, naming: _Naming) -> list[ReidItem]:
    """The images of one folder, junk dropped. Non-image files (Thumbs.db...) are ignored; an image whose
    name does not follow the dataset's convention means the folder is not what it claims to be."""
    names = sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
    )
    items, strangers = [], []
    for file_name in names:
        match = naming.pattern.match(file_name)
        if not match:
            strangers.append(file_name)
            continue
        pid, camid = int(match.group(1)), int(match.group(2))
        if pid != JUNK_PID:
            items.append(ReidItem(str(folder / file_name), pid, camid))
    if strangers:
        shown = ", ".join(repr(s) for s in strangers[:3])
        raise DataError(
            f"{folder}: {len(strangers)} image file(s) do not follow the {naming.dataset} naming "
            f"(like '{naming.example}'), e.g. {shown}: is this really a {naming.dataset} folder?"
        )
    if not items:
        raise DataError(f"{folder}: no {naming.dataset} image found (expected files like '{naming.example}')")
    return items


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path} does not exist (expected {what})")
    if not path.is_dir():
        raise DataError(f"{path} is not a folder (expected {what})")


# ---- MSMT17: list files --------------------------------------------------------------------------------

MSMT17_LAYOUTS = (("train", "test"), ("mask_train_v2", "mask_test_v2"))  # V1, V2 (V2 has blurred faces)
MSMT17_LISTS = {
    "train": "list_train.txt",
    "val": "list_val.txt",
    "query": "list_query.txt",
    "gallery": "list_gallery.txt",
}
# 0000_000_01_0303morning_0015_0.jpg: pid, index, CAMERA (1-based), date+time, frame, box.
_MSMT17_NAME = re.compile(r"^\d+_\d+_(\d+)_")


def read_msmt17(root: str | os.PathLike) -> ReidSplit:
    """MSMT17 V1 (train/, test/) or V2 (mask_train_v2/, mask_test_v2/), split by its list files whose lines
    are '<relative path> <pid>'. As torchreid does, train is list_train + list_val."""
    root = Path(root)
    _require_dir(root, "an MSMT17 folder")
    missing = [name for name in MSMT17_LISTS.values() if not (root / name).is_file()]
    subdirs = {entry.name.lower(): entry.name for entry in os.scandir(root) if entry.is_dir()}
    if missing:
        inner = [name for low, name in subdirs.items() if low.startswith("msmt17")]
        hint = f"; it holds {inner[0]}/: point at that folder instead" if inner else ""
        raise DataError(f"{root} is not an MSMT17 folder: missing {', '.join(missing)}{hint}")
    layout = next(
        ((subdirs[a], subdirs[b]) for a, b in MSMT17_LAYOUTS if a in subdirs and b in subdirs), None
    )
    if layout is None:
        expected = " or ".join(f"{a}/ + {b}/" for a, b in MSMT17_LAYOUTS)
        raise DataError(f"{root} is not an MSMT17 folder: no image folders (expected {expected})")
    train_dir, test_dir = root / layout[0], root / layout[1]
    parts = {
        part: _read_msmt17_list(root / list_name, train_dir if part in ("train", "val") else test_dir)
        for part, list_name in MSMT17_LISTS.items()
    }
    return ReidSplit(
        "msmt17",
        train=tuple(sorted(parts["train"] + parts["val"], key=lambda item: item.path)),
        query=tuple(parts["query"]),
        gallery=tuple(parts["gallery"]),
    )


def _read_msmt17_list(list_file: Path, image_dir: Path) -> list[ReidItem]:
    items = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        match = _MSMT17_NAME.match(os.path.basename(fields[0])) if len(fields) == 2 else None
        if match is None or not fields[1].lstrip("-").isdigit():
            raise DataError(
                f"{list_file}:{number}: expected '<path> <pid>' with an MSMT17 file name like "
                f"'0000/0000_000_01_0303morning_0015_0.jpg 0', got {line.strip()!r}"
            )
        pid = int(fields[1])
        if pid != JUNK_PID:
            items.append(ReidItem(str(image_dir / fields[0]), pid, int(match.group(1))))
    if not items:
        raise DataError(
            f"{list_file}: no entry (expected lines like '0000/0000_000_01_0303morning_0015_0.jpg 0')"
        )
    # One existence check per list: cheap, and it catches a list paired with the wrong image folder.
    if not Path(items[0].path).is_file():
        raise DataError(f"{list_file} names {items[0].path}, which does not exist: are the images extracted?")
    return sorted(items, key=lambda item: item.path)


# ---- synthetic splits of dppp datasets -----------------------------------------------------------------

INDEX_COLUMNS = ("key", "shard", "pid", "camid")


def split_synthetic(
    rows: Any,
    seed: int = 0,
    *,
    queries_per_camera: int = 1,
    held_out_pids: int | None = None,
    name: str = "synthetic",
) -> ReidSplit:
    """A Market-style split of a synthetic dataset from its index rows (list of dicts or a pyarrow Table with
    at least key, shard, pid, camid; one row per sample).

    - `held_out_pids=None`: every identity is a test identity (a dataset generated for evaluation) and train
      is empty; otherwise that many identities, chosen by `seed`, are held out and the rest form train.
    - For each test identity and each of its cameras, `queries_per_camera` samples (chosen by seed and pid)
      go to the query set, the rest to the gallery; a camera always keeps at least one gallery sample, so
      with two cameras or more every query has a true match that the same-camera exclusion leaves.
      Identities seen by a single camera go wholly to the gallery (they would only give skipped queries).
    The result depends only on (rows as a set, seed, options): not on the row order.
    """
    if queries_per_camera < 1:
        raise ValueError(f"queries_per_camera must be >= 1, got {queries_per_camera}")
    records = _index_records(rows)
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["key"]):
        by_pid.setdefault(record["pid"], []).append(record)
    pids = sorted(by_pid)

    if held_out_pids is None:
        test_pids = set(pids)
    else:
        if not 1 <= held_out_pids <= len(pids):
            raise DataError(f"held_out_pids={held_out_pids} but the index has {len(pids)} identities")
        rng = np.random.default_rng([seed, len(pids)])
        test_pids = {int(p) for p in rng.choice(pids, size=held_out_pids, replace=False)}

    train, query, gallery = [], [], []
    for pid in pids:
        samples = [ReidItem(f"{r['shard']}#{r['key']}", pid, r["camid"]) for r in by_pid[pid]]
        if pid not in test_pids:
            train.extend(samples)
            continue
        by_cam: dict[int, list[ReidItem]] = {}
        for item in samples:
            by_cam.setdefault(item.camid, []).append(item)
        if len(by_cam) < 2:
            gallery.extend(samples)
            continue
        rng = np.random.default_rng([seed, pid])  # per identity: adding identities changes nothing here
        for camid in sorted(by_cam):
            cam_items = by_cam[camid]
            picked = set(
                rng.permutation(len(cam_items))[: min(queries_per_camera, len(cam_items) - 1)].tolist()
            )
            for i, item in enumerate(cam_items):
                (query if i in picked else gallery).append(item)
    if not query:
        raise DataError(
            f"the synthetic split has no query: no test identity is seen by two cameras or more "
            f"({len(test_pids)} test identities, {len(records)} samples)"
        )
    # Paths are unique ("<shard>#<key>"): ordering by them gives one layout whatever the row order was.
    return ReidSplit(
        name, *(tuple(sorted(part, key=lambda item: item.path)) for part in (train, query, gallery))
    )


def _index_records(rows: Any) -> list[dict[str, Any]]:
    """Index rows as dicts holding the needed columns, with the types checked."""
    if hasattr(rows, "column_names") and hasattr(rows, "select"):  # a pyarrow Table
        missing = [c for c in INDEX_COLUMNS if c not in rows.column_names]
        if missing:
            raise DataError(f"the dataset index lacks column(s) {', '.join(missing)}")
        rows = rows.select(list(INDEX_COLUMNS)).to_pylist()
    if not isinstance(rows, Iterable):
        raise TypeError(f"rows must be a list of dicts or a pyarrow Table, got {type(rows).__name__}")
    records, keys = [], set()
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"index row {number} is a {type(row).__name__}, not a mapping")
        missing = [c for c in INDEX_COLUMNS if c not in row or row[c] is None]
        if missing:
            raise DataError(f"index row {number} lacks {', '.join(missing)}")
        try:
            record = {
                "key": str(row["key"]),
                "shard": _shard_key(row["shard"]),
                "pid": _as_int(row["pid"]),
                "camid": _as_int(row["camid"]),
            }
        except ValueError as exc:
            raise DataError(f"index row {number}: {exc}") from None
        if record["key"] in keys:
            raise DataError(f"the index holds sample key {record['key']!r} twice")
        keys.add(record["key"])
        records.append(record)
    if not records:
        raise DataError("the dataset index is empty")
    return records


def _shard_key(value: Any) -> str:
    """The index stores a shard's number; items name its tar key under the dataset root."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        from dppp.dataset.format import shard_name

        return shard_name(int(value))
    return str(value)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"expected an integer pid/camid, got {value!r}")
    return int(value)


def read_synthetic(
    url: str,
    seed: int = 0,
    *,
    queries_per_camera: int = 1,
    held_out_pids: int | None = None,
    storage_config=None,
    curation: str = "off",
) -> ReidSplit:
    """The split of a dppp dataset at `url` (local path, file:// or s3://) from its index.parquet, without
    the images a curation file rejected (`curation`: auto, off or a path, as train.data.curation)."""
    from dppp.dataset.curation import resolve_curation
    from dppp.dataset.records import read_index
    from dppp.foundation.storage.urls import open_storage

    storage = open_storage(url, storage_config)
    try:
        table = read_index(storage)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{url}: index.parquet cannot be read as parquet: {exc}") from None
    judged = resolve_curation(curation, storage, storage_config, "eval.synthetic.curation")
    if judged is not None and "shard" in table.column_names and "key" in table.column_names:
        shards, keys = table.column("shard").to_pylist(), table.column("key").to_pylist()
        keep = [
            key not in judged.rejected.get(int(shard), ()) for shard, key in zip(shards, keys, strict=True)
        ]
        table = table.filter(keep)
    return split_synthetic(table, seed, queries_per_camera=queries_per_camera, held_out_pids=held_out_pids)


def synthetic_images(url: str, items: Iterable[ReidItem], *, storage_config=None) -> Iterator[Any]:
    """The images (PIL, RGB) of synthetic items "<shard>#<key>", in item order, streamed from the shards
    of the dataset at `url`. Each run of consecutive items from one shard reads that shard once (a split's
    items are sorted by path, so every shard is read once); only the wanted images are decoded."""
    from PIL import Image

    from dppp.dataset.format import READ_IMAGE_EXTS
    from dppp.dataset.shard_reader import image_member, read_shard
    from dppp.foundation.storage.urls import open_storage

    storage = open_storage(url, storage_config)
    run: list[tuple[str, str]] = []

    def flush() -> Iterator[Any]:
        shard = run[0][0]
        wanted = {key for _, key in run}
        found: dict[str, bytes] = {}
        with storage.open_read(shard) as stream:
            samples = read_shard(
                stream, include=READ_IMAGE_EXTS, storage_config=storage_config, name=storage.url_for(shard)
            )
            for sample in samples:
                if sample["__key__"] in wanted and (ext := image_member(sample)):
                    found[sample["__key__"]] = sample[ext]
        for _, key in run:
            if key not in found:
                raise DataError(
                    f"{storage.url_for(shard)} has no image for sample {key}: index and shards disagree"
                )
            with Image.open(io.BytesIO(found[key])) as image:
                yield image.convert("RGB")

    for item in items:
        shard, sep, key = item.path.rpartition("#")
        if not sep or not shard:
            raise ValueError(f"{item.path!r} is not a synthetic item ('<shard>#<key>')")
        if run and run[0][0] != shard:
            yield from flush()
            run = []
        run.append((shard, key))
    if run:
        yield from flush()
