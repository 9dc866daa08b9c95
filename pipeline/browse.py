"""Looking at a dataset: attribute statistics (from index.parquet), one sample, a contact sheet.

Each function streams what it needs (the index, or only the shards that can hold what was asked for).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from PIL import Image

from dppp.dataset.curation import CURATION_NAME, read_curation
from dppp.dataset.keys import KEY_RE, parse_sample_key
from dppp.dataset.limits import ShardStorageConfig
from dppp.dataset.listing import committed_shards, open_dataset
from dppp.dataset.records import ATTRIBUTE_PREFIX, INDEX_NAME, ShardRecord, read_dataset_manifest, read_index
from dppp.dataset.shard_reader import image_member, read_shard
from dppp.foundation.contact_sheet import make_contact_sheet
from dppp.foundation.errors import DamagedDataError, DataError, SettingError, UserError
from dppp.foundation.storage.local import write_file

# matplotlib is imported inside plot_stats: only the chart needs it (and the Agg backend must be
# chosen before pyplot loads).

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
    # attribute -> samples where nobody can see it (the taxonomy's hidden_when: a bag's colour without a
    # bag), left out of its counts
    hidden: dict[str, int] = field(default_factory=dict)
    curation: Any = None  # dppp.dataset.curation.Counts of URL/curation.parquet; None when not curated


def hidden_conditions(storage) -> dict[str, dict[str, list[str]]]:
    """attribute -> its `hidden_when` conditions (dimension -> values), from dataset.json's taxonomy;
    none for a dataset without one."""
    try:
        taxonomy = read_dataset_manifest(storage).get("taxonomy") or {}
    except DataError:
        return {}
    hidden = {}
    for level in ("identity", "view"):
        for name, spec in (taxonomy.get(level) or {}).items():
            when = spec.get("hidden_when") if isinstance(spec, dict) else None
            if isinstance(when, dict) and when:
                hidden[name] = {
                    dim: [str(v) for v in (values if isinstance(values, list) else [values])]
                    for dim, values in when.items()
                }
    return hidden


def dataset_stats(url: str, config: ShardStorageConfig | None = None) -> DatasetStats:
    """Attribute distributions, cameras and views per identity, from index.parquet (and dataset.json's
    taxonomy, for the attributes nobody can see in some samples: those are not counted), once the listing
    shows that it indexes the committed shards (no record is read); DamagedDataError when it does not.
    Kept and rejected images from curation.parquet's metadata when the dataset was curated (no row of it
    is read)."""
    storage, listing = open_dataset(url, config)
    table = read_index(storage)
    curation = read_curation(storage, rows=False).counts if storage.exists(CURATION_NAME) else None
    where, rebuild = storage.url_for(INDEX_NAME), f"rebuild it with `dppp shards index {storage.url}`"
    lacking = sorted({"pid", "camid", "shard"} - set(table.column_names))
    if lacking:
        raise DamagedDataError(f"{where} has no column {', '.join(lacking)}: not a dppp index; {rebuild}")

    indexed, committed = set(pc.unique(table.column("shard")).to_pylist()), set(listing.committed())
    if indexed != committed:
        raise DamagedDataError(
            f"{where} is stale: it indexes {len(indexed)} shard(s) ({table.num_rows} samples), the dataset "
            f"has {len(committed)} committed; {rebuild}"
        )
    pids = table.column("pid").to_pylist()
    columns = {
        name[len(ATTRIBUTE_PREFIX) :]: name
        for name in table.column_names
        if name.startswith(ATTRIBUTE_PREFIX)
    }
    values_of = {name: table.column(column).to_pylist() for name, column in columns.items()}
    attributes, hidden = {}, {}
    for name, when in hidden_conditions(storage).items():
        if name in values_of and all(dim in values_of for dim in when):
            mask = [
                all(str(values_of[d][i]) in allowed for d, allowed in when.items()) for i in range(len(pids))
            ]
            hidden[name] = sum(mask)
            values_of[name] = [v for v, unseen in zip(values_of[name], mask, strict=True) if not unseen]
    for name, values in values_of.items():
        counts = Counter(v if v is not None else "(none)" for v in values)
        attributes[name] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    views = Counter(Counter(pids).values())
    cameras = Counter(c for c in table.column("camid").to_pylist() if c is not None)
    return DatasetStats(
        storage.url,
        table.num_rows,
        len(set(pids)),
        len(indexed),
        attributes,
        sorted(views.items()),
        sorted(cameras.items()),
        hidden,
        curation,
    )


def plot_stats(stats: DatasetStats, out) -> None:
    """One bar chart per attribute, plus cameras and views per identity, in one image (PNG, or the format
    `out`'s extension names), written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [
        (
            f"views per identity (n={stats.identities})",
            "identities",
            [str(k) for k, _ in stats.views_per_identity],
            [v for _, v in stats.views_per_identity],
        )
    ]
    if "camera" not in stats.attributes:  # the taxonomy's camera attribute is the camid: one chart
        panels.append(("camid", "samples", [str(k) for k, _ in stats.cameras], [v for _, v in stats.cameras]))
    for name, counts in stats.attributes.items():
        unseen = stats.hidden.get(name)
        title = f"{name} (where visible: {stats.samples - unseen} samples)" if unseen else name
        panels.append((title, "samples", [str(k) for k, _ in counts], [v for _, v in counts]))
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    # Constrained layout leaves room for the figure's title above the first row (tight_layout drew it
    # over the first chart) and for the rotated value names.
    figure, axes = plt.subplots(
        rows, columns, figsize=(5 * columns, 3.2 * rows + 0.6), squeeze=False, layout="constrained"
    )
    for ax, (title, unit, labels, values) in zip(axes.flat, panels, strict=False):
        ax.bar(range(len(values)), values, color="#4477aa")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 1.5 identities
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle(
        f"{stats.url}: {stats.samples} samples, {stats.identities} identities, {stats.shards} shards"
    )
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, dpi=90, format=Path(out).suffix.lstrip(".").lower() or "png")
    except ValueError as exc:  # a format matplotlib does not write
        raise SettingError("plot", f"{out}: {exc}") from None
    finally:
        plt.close(figure)
    write_file(out, buffer.getvalue())


def save_image(image, out) -> None:
    """Write a PIL image to `out` in the format its extension names, whole or not at all; what the disk
    refuses is a StorageError naming the file."""
    suffix = Path(out).suffix.lower()
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None:
        raise SettingError(
            "out", f"{out}: no image format has the extension {suffix or '(none)'!r}; use .png or .jpg"
        )
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    write_file(out, buffer.getvalue())


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


def show_sample(url: str, key: str, config: ShardStorageConfig | None = None) -> SampleView:
    """Find one sample by key (the record whose pids hold its pid; every shard if the key says none)."""
    if not KEY_RE.fullmatch(key):
        raise UserError(f"{key!r} is not a sample key (e.g. p000012_v003)")
    storage, _ = open_dataset(url, config)
    records = committed_shards(storage)
    parsed = parse_sample_key(key)
    candidates = _records_for_pid(records, parsed[0]) if parsed else records
    for record in (r for r in candidates if key in r.keys):
        skipped: list = []  # the shard's members the reader would not read (a link, a pickle...)
        with storage.open_read(record.tar) as stream:
            for sample in read_shard(
                stream, storage_config=config, name=storage.url_for(record.tar), on_skip=skipped.append
            ):
                if sample["__key__"] == key:
                    image_ext = image_member(sample)
                    where = f"{storage.url_for(record.tar)}: sample {key!r}"
                    check_whole(sample, image_ext, [m for m in skipped if m.key == key], where)
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


def check_whole(sample: dict[str, Any], image_ext: str | None, skipped: list, where: str) -> None:
    """DamagedDataError naming what a sample lacks, and why (a member that is a link is never read)."""
    lacking = [ext for ext in ("json", "txt", "cls") if ext not in sample] + ([] if image_ext else ["image"])
    if lacking:
        why = "".join(f"; {m.name}: {m.skipped}" for m in skipped)
        raise DamagedDataError(
            f"{where} has no readable {', '.join(lacking)} member{why} (`dppp shards verify` reports it)"
        )


# -------------------------------------------------------------------------------------------- grid


def contact_grid(
    url: str,
    *,
    shard: int | None = None,
    pid: int | None = None,
    n: int = 64,
    columns: int = 8,
    config: ShardStorageConfig | None = None,
):
    """A contact sheet (PIL image) of up to `n` samples captioned 'pid camid key', streamed shard by shard
    (only the shards that can hold what was asked for are opened). Returns (sheet, samples shown)."""
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
            samples = read_shard(
                stream, decode_images=True, storage_config=config, name=storage.url_for(record.tar)
            )
            for sample in samples:
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
