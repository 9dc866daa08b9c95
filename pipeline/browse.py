"""Looking at a dataset: attribute statistics (from index.parquet), one sample, a contact sheet.

Each function streams what it needs (the index, or only the shards that can hold what was asked for).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from foundation.errors import DataError, SettingError, UserError
from pipeline.listing import committed_shards, open_dataset
from pipeline.records import ATTRIBUTE_PREFIX, ShardRecord, read_index
from pipeline.shards.format import SAMPLE_KEY_RE
from pipeline.shards.reader import image_member, read_shard
from pipeline.storage.config import StorageConfig
from pipeline.storage.urls import open_storage
from prompts.spec import parse_sample_key

# ------------------------------------------------------------------------------------------- stats


@dataclass
class DatasetStats:
    url: str
    samples: int
    identities: int
    shards: int
    attributes: dict[str, list[tuple[str, int]]]  # name (without prefix) -> (value, count), most common first
    views_per_identity: list[tuple[int, int]]  # (views, number of identities with that many), by views
    cameras: list[tuple[int, int]]  # (camid, samples)
    curation: Any = None  # pipeline.curation.Counts of URL/curation.parquet; None when not curated


def dataset_stats(url: str, config: StorageConfig | None = None) -> DatasetStats:
    """Attribute distributions, cameras and views per identity, from index.parquet; kept and rejected
    images from curation.parquet's metadata when the dataset was curated (no row of it is read)."""
    from pipeline.curation import CURATION_NAME, read_curation

    storage = open_storage(url, config)
    table = read_index(storage)
    curation = read_curation(storage, rows=False).counts if storage.exists(CURATION_NAME) else None
    pids = table.column("pid").to_pylist()
    attributes = {}
    for name in table.column_names:
        if name.startswith(ATTRIBUTE_PREFIX):
            counts = Counter(v if v is not None else "(none)" for v in table.column(name).to_pylist())
            attributes[name[len(ATTRIBUTE_PREFIX) :]] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    views = Counter(Counter(pids).values())
    cameras = Counter(c for c in table.column("camid").to_pylist() if c is not None)
    return DatasetStats(
        storage.url,
        table.num_rows,
        len(set(pids)),
        len(set(table.column("shard").to_pylist())),
        attributes,
        sorted(views.items()),
        sorted(cameras.items()),
        curation,
    )


def plot_stats(stats: DatasetStats, out) -> None:
    """One bar chart per attribute, plus cameras and views per identity, in a single PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (
            f"views per identity (n={stats.identities})",
            [str(k) for k, _ in stats.views_per_identity],
            [v for _, v in stats.views_per_identity],
        ),
        ("camid", [str(k) for k, _ in stats.cameras], [v for _, v in stats.cameras]),
    ]
    panels += [
        (name, [str(k) for k, _ in counts], [v for _, v in counts])
        for name, counts in stats.attributes.items()
    ]
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    for ax, (title, labels, values) in zip(axes.flat, panels, strict=False):
        ax.bar(range(len(values)), values, color="#4477aa")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle(
        f"{stats.url}: {stats.samples} samples, {stats.identities} identities, {stats.shards} shards"
    )
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


# -------------------------------------------------------------------------------------- show / grid


@dataclass
class SampleView:
    key: str
    shard: str
    metadata: dict[str, Any]
    prompt: str
    pid: int
    image_ext: str
    image_bytes: bytes


def _records_for_pid(records: list[ShardRecord], pid: int) -> list[ShardRecord]:
    return [r for r in records if pid in r.pids]


def show_sample(url: str, key: str, config: StorageConfig | None = None) -> SampleView:
    """Find one sample by key (the record whose pids hold its pid; every shard if the key says none)."""
    if not SAMPLE_KEY_RE.fullmatch(key):
        raise UserError(f"{key!r} is not a sample key (e.g. p000012_v003)")
    storage, _ = open_dataset(url, config)
    records = committed_shards(storage)
    parsed = parse_sample_key(key)
    candidates = _records_for_pid(records, parsed[0]) if parsed else records
    for record in (r for r in candidates if key in r.keys):
        with storage.open_read(record.tar) as stream:
            for sample in read_shard(stream):
                if sample["__key__"] == key:
                    image_ext = image_member(sample)
                    return SampleView(
                        key,
                        record.tar,
                        sample["json"],
                        sample["txt"],
                        sample["cls"],
                        image_ext,
                        sample[image_ext],
                    )
    raise DataError(f"no sample {key!r} in the committed shards of {storage.url}")


# -------------------------------------------------------------------------------------------- grid


def contact_grid(
    url: str,
    *,
    shard: int | None = None,
    pid: int | None = None,
    n: int = 64,
    columns: int = 8,
    config: StorageConfig | None = None,
):
    """A contact sheet (PIL image) of up to `n` samples captioned 'pid camid key', streamed shard by shard
    (only the shards that can hold what was asked for are opened). Returns (sheet, samples shown)."""
    from pipeline.contact_sheet import make_contact_sheet

    if n < 1:
        raise SettingError("n", f"must be at least 1, got {n}")
    storage, _ = open_dataset(url, config)
    records = committed_shards(storage)
    if shard is not None:
        records = [r for r in records if r.index == shard]
        if not records:
            raise DataError(f"no committed shard {shard} in {storage.url}")
    if pid is not None:
        records = _records_for_pid(records, pid)
        if not records:
            raise DataError(f"no identity {pid} in the committed shards of {storage.url}")
    images, captions = [], []
    for record in records:
        with storage.open_read(record.tar) as stream:
            for sample in read_shard(stream, decode_images=True):
                if pid is not None and sample.get("cls") != pid:
                    continue
                image_ext = image_member(sample)
                if image_ext is None:
                    continue
                meta = sample.get("json", {})
                images.append(sample[image_ext])
                captions.append(f"pid {sample.get('cls')} cam {meta.get('camid')} {sample['__key__']}")
                if len(images) >= n:
                    break
        if len(images) >= n:
            break
    if not images:
        raise DataError(f"no samples to show in {storage.url}")
    what = f"shard {shard}" if shard is not None else (f"pid {pid}" if pid is not None else "first samples")
    sheet = make_contact_sheet(
        images, captions, columns, title=f"{storage.url}: {what} ({len(images)} samples)"
    )
    return sheet, len(images)
