"""Index fragments and their merge: the worker's fragment rows are the rows read from the tar, the merge
reads no tar, older datasets get their fragments once, and a fragment that disagrees with its record is
never indexed (the merge refuses it, `verify` reports it)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dppp.cli import main
from dppp.dataset.format import fragment_name, record_name
from dppp.dataset.index import (
    build_index,
    encode_fragment,
    fragment_ref,
    index_rows,
    read_fragment,
    rows_table,
    write_index,
)
from dppp.dataset.listing import committed_shards, key_ranges, list_objects
from dppp.dataset.records import read_index, read_record, write_dataset_manifest
from dppp.dataset.shard_writer import Sample, write_shard
from dppp.foundation.errors import DataError
from dppp.foundation.parallel import ordered_map
from dppp.foundation.storage.local import LocalStorage
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.publish import publish_shard
from dppp.pipeline.verify import verify_dataset

SHARDS = 4


class Recording(LocalStorage):
    """Local storage that remembers every object read, and how many bytes: what a driver reads."""

    def __init__(self, root):
        super().__init__(root)
        self.opened: list[str] = []
        self.bytes_read = 0

    def open_read(self, key):
        self.opened.append(key)
        return super().open_read(key)

    def read_bytes(self, key):
        data = super().read_bytes(key)
        self.bytes_read += len(data)
        return data


def odd_samples(samples, index):
    """Shard 2's samples carry an extra attribute the others lack: the merge must add a null column."""
    if index != 2:
        return samples
    return [
        Sample(
            s.key,
            s.image_bytes,
            s.image_ext,
            {**s.metadata, "attributes": {**s.metadata["attributes"], "umbrella": "red"}},
            s.prompt,
            s.pid,
        )
        for s in samples
    ]


def publish(storage, tmp_path, make_samples, shards=SHARDS, first=0):
    write_dataset_manifest(storage, {"plan": {"shards": first + shards}})
    for index in range(first, first + shards):
        samples = odd_samples(make_samples(2, 3, first_pid=2 * index), index)
        info = write_shard(samples, tmp_path / f"{index}.tar")
        publish_shard(storage, index, tmp_path / f"{index}.tar", info)
    return storage


@pytest.fixture
def dataset(tmp_path, make_samples):
    return publish(Recording(tmp_path / "ds"), tmp_path, make_samples)


def test_fragment_rows_are_the_rows_read_from_the_tar(dataset):
    for record in committed_shards(dataset):
        assert record.fragment is not None and record.fragment.key == fragment_name(record.index)
        from_tar = rows_table(index_rows(dataset, record))
        assert read_fragment(dataset, record.fragment, record.index).equals(from_tar)
        assert record.fragment.rows == record.count and record.fragment.columns == [
            n for n in from_tar.column_names if n.startswith("attr_")
        ]
    assert write_index(dataset) == SHARDS * 6
    merged = read_index(dataset)
    assert merged.equals(build_index(dataset))  # the tars' own rows, the same table
    assert merged.column("attr_umbrella").to_pylist() == [None] * 12 + ["red"] * 6 + [None] * 6
    assert merged.column("key").to_pylist() == sorted(merged.column("key").to_pylist())


def test_merge_reads_no_tar(dataset):
    dataset.opened.clear()
    dataset.bytes_read = 0
    write_index(dataset)
    assert not [key for key in dataset.opened if key.endswith(".tar")]
    assert {key.rsplit(".", 1)[1] for key in dataset.opened} == {"json", "parquet"}
    tars = sum(o.tar for o in list_objects(dataset).shards.values())
    assert dataset.bytes_read < tars / 2


def test_index_is_written_in_row_groups(dataset, monkeypatch):
    import pyarrow.parquet as pq

    import dppp.dataset.index as index_module

    monkeypatch.setattr(index_module, "ROW_GROUP_ROWS", 10)
    write_index(dataset)
    path = dataset.root / "index.parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups == 2  # 6 + 6 rows held, then written: twice
    assert pq.read_table(path).equals(build_index(dataset))


def as_legacy(storage, index):
    """What a shard committed before fragments existed looks like: no fragment, a version-1 record."""
    record = read_record(storage, index)
    storage.delete(fragment_name(index))
    old = json.loads(record.to_json())
    del old["fragment"]
    old["format_version"] = 1
    storage.put_bytes(json.dumps(old).encode(), record_name(index))


def test_older_dataset_gets_its_fragments_once(dataset):
    expected = build_index(dataset)
    for index in (0, 2):
        as_legacy(dataset, index)
    report = verify_dataset(dataset.url)
    assert report.ok and any("2 committed shard(s) have no index fragment" in note for note in report.notes)
    dataset.opened.clear()
    write_index(dataset)
    assert sorted(key for key in dataset.opened if key.endswith(".tar")) == [
        "shards/shard-000000.tar",
        "shards/shard-000002.tar",
    ]
    assert read_index(dataset).equals(expected)
    assert all(r.fragment is not None for r in committed_shards(dataset))
    dataset.opened.clear()
    write_index(dataset)
    assert not [key for key in dataset.opened if key.endswith(".tar")]  # once only
    report = verify_dataset(dataset.url)
    assert report.ok and not report.notes


def tamper_row(storage, index, *, commit: bool):
    """Rewrite shard `index`'s fragment with one prompt changed; `commit`: also point its record at the new
    bytes (a fragment consistent with its record, but not with the tar)."""
    record = read_record(storage, index)
    table = read_fragment(storage, record.fragment, index)
    prompts = table.column("prompt").to_pylist()
    prompts[1] = "a photo of nobody"
    table = table.set_column(table.column_names.index("prompt"), "prompt", pa.array(prompts))
    data = encode_fragment(table)
    storage.put_bytes(data, fragment_name(index))
    if commit:
        storage.put_bytes(
            record.model_copy(update={"fragment": fragment_ref(index, data, table)}).to_json(),
            record_name(index),
        )


def test_merge_refuses_a_fragment_that_disagrees_with_its_record(dataset, capsys):
    write_index(dataset)
    before = read_index(dataset)
    tamper_row(dataset, 1, commit=False)
    with pytest.raises(DataError, match="shard-000001.parquet.*sha256 differs from its commit record"):
        write_index(dataset)
    assert read_index(dataset).equals(before)  # nothing half-written
    assert main(["shards", "index", dataset.url]) == 2
    assert "sha256 differs" in capsys.readouterr().err
    assert main(["shards", "index", dataset.url, "--from-tars"]) == 0  # rebuilt from the tars, when asked
    assert read_index(dataset).equals(before) and verify_dataset(dataset.url).ok


def damage_missing(storage):
    storage.delete(fragment_name(1))


def damage_bytes(storage):
    data = bytearray(storage.read_bytes(fragment_name(1)))
    data[len(data) // 2] ^= 0x01
    storage.put_bytes(bytes(data), fragment_name(1))


def damage_keys(storage):
    """A fragment and record that agree with each other, but the fragment holds another shard's rows."""
    other = read_fragment(storage, read_record(storage, 0).fragment, 0)
    record = read_record(storage, 1)
    data = encode_fragment(other)
    storage.put_bytes(data, fragment_name(1))
    storage.put_bytes(
        record.model_copy(update={"fragment": fragment_ref(1, data, other)}).to_json(), record_name(1)
    )


# damage -> (harm, verify's status, its message, whether the merge can tell without reading the tar)
FRAGMENT_DAMAGE = {
    "fragment missing": (
        damage_missing,
        "missing",
        "index fragment shards/shard-000001.parquet is missing",
        True,
    ),
    "fragment bytes": (damage_bytes, "corrupted", "sha256 differs from its commit record", True),
    "another shard's rows": (damage_keys, "corrupted", "holds rows of shard(s) [0]", True),
    # sha256 and keys agree with the record: only the tar's own json can tell, so only verify does
    "row changed, record updated": (
        lambda s: tamper_row(s, 1, commit=True),
        "corrupted",
        "disagrees with the tar: sample p000002_v001, prompt 'a photo of nobody'",
        False,
    ),
}


@pytest.mark.parametrize("damage", list(FRAGMENT_DAMAGE))
def test_verify_reports_fragments_that_disagree_with_records(dataset, capsys, damage):
    harm, status, message, merge_tells = FRAGMENT_DAMAGE[damage]
    write_index(dataset)
    harm(dataset)
    report = verify_dataset(dataset.url)
    assert [(c.name, c.status) for c in report.checks] == [("shards/shard-000001.tar", status)]
    assert message in report.checks[0].problems[0][1]
    assert main(["shards", "verify", dataset.url]) == 1
    assert status in capsys.readouterr().out
    if merge_tells:
        with pytest.raises(DataError, match="shard-000001"):  # never indexed
            write_index(dataset)


def test_verify_reports_a_stale_index_with_the_same_row_count(dataset):
    write_index(dataset)
    table = read_index(dataset)
    keys = table.column("key").to_pylist()
    keys[0] = "p999999_v000"
    import io

    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table.set_column(0, "key", pa.array(keys)), buffer)
    dataset.put_bytes(buffer.getvalue(), "index.parquet")
    report = verify_dataset(dataset.url)
    assert report.ok and any("index.parquet is stale: its keys differ" in note for note in report.notes)


def test_uncommitted_fragment_is_reported(dataset):
    dataset.delete(record_name(3))
    dataset.delete("shards/shard-000003.tar")
    report = verify_dataset(dataset.url)
    assert [(c.name, c.status) for c in report.checks] == [(fragment_name(3), "uncommitted")]


# ---------------------------------------------------------------------------------------- concurrency


def test_key_ranges_cover_every_key_once():
    ranges = key_ranges(3500)
    assert ranges[0][0] is None and ranges[-1][1] is None and len(ranges) == 4
    keys = [
        "dataset.json",
        "index.parquet",
        "shards/notes.bin",
        "shards/shard-000999.tar",
        "shards/shard-001000.json",
        "shards/shard-001000.tar",
        "shards/shard-1000000.tar",
        "zzz",
    ]
    for key in keys:
        inside = [(a, b) for a, b in ranges if (a is None or key > a) and (b is None or key <= b)]
        assert len(inside) == 1, key
    assert key_ranges(None) == key_ranges(10) == [(None, None)]


def test_ordered_map_keeps_order_and_a_bounded_window():
    import threading
    import time

    pulled = []
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def items():
        for i in range(40):
            pulled.append(i)
            yield i

    def work(i):
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.002 * (i % 3))
        with lock:
            in_flight[0] -= 1
        return i * i

    results = ordered_map(work, items(), threads=4, window=6)
    assert next(results) == 0 and len(pulled) <= 7  # no more than the window ahead of the consumer
    assert [0, *results] == [i * i for i in range(40)] and in_flight[1] <= 4

    def fail(i):
        if i == 5:
            raise ValueError("five")
        return i

    with pytest.raises(ValueError, match="five"):
        list(ordered_map(fail, range(20), threads=3))


def test_s3_listing_in_key_ranges_equals_one_listing(moto_s3, tmp_path, make_samples, monkeypatch):

    storage = publish(open_storage(moto_s3.bucket() + "/ds"), tmp_path, make_samples, shards=7)
    storage.put_bytes(b"junk", "shards/notes.bin")
    import dppp.dataset.listing as listing_module

    monkeypatch.setattr(listing_module, "SHARDS_PER_RANGE", 2)
    calls = []
    listed = type(storage).iter_list
    monkeypatch.setattr(
        type(storage),
        "iter_list",
        lambda self, prefix="", *, after=None: calls.append(after) or listed(self, prefix, after=after),
    )
    ranged = list_objects(storage, shards_hint=7, threads=4)
    assert sorted(calls, key=str) == [
        None,
        "shards/shard-000002",
        "shards/shard-000004",
        "shards/shard-000006",
    ]
    whole = list_objects(storage)
    assert ranged.shards == whole.shards and ranged.others == whole.others
    assert sorted(ranged.shards) == list(range(7)) and set(ranged.others) == {
        "dataset.json",
        "shards/notes.bin",
    }
    assert all(o.tar and o.record and o.fragment for o in ranged.shards.values())
    assert write_index(storage, shards_hint=7) == 42
    report = verify_dataset(storage.url)  # cuts its listing by dataset.json's plan (7 shards)
    assert report.verified == 7 and [c.name for c in report.checks] == ["shards/notes.bin"]


def test_from_tars_refuses_a_sample_whose_image_is_a_symlink(dataset, capsys):
    """A committed shard (record consistent with its tar) whose first image is a symlink to /etc/passwd:
    `verify` calls it unsafe, so `index --from-tars` indexes nothing of it (it used to warn and go on)."""
    import hashlib
    import io
    import tarfile

    write_index(dataset)
    before = read_index(dataset)
    record = read_record(dataset, 1)
    rebuilt = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(dataset.read_bytes(record.tar))) as tar,
        tarfile.open(fileobj=rebuilt, mode="w", format=tarfile.PAX_FORMAT) as out,
    ):
        for entry in tar:
            if entry.name == f"{record.keys[0]}.jpg":
                link = tarfile.TarInfo(entry.name)
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                out.addfile(link)
            else:
                out.addfile(entry, tar.extractfile(entry))
    data = rebuilt.getvalue()
    dataset.put_bytes(data, record.tar)
    update = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    dataset.put_bytes(record.model_copy(update=update).to_json(), record_name(1))
    capsys.readouterr()

    assert main(["shards", "index", dataset.url, "--from-tars"]) == 1  # damage, as verify says
    err = capsys.readouterr().err
    assert err == (
        f"error: {dataset.url}/shards/shard-000001.tar: member 'p000002_v000.jpg': not a regular file; "
        "not indexed (`dppp shards verify` reports it as unsafe)\n"
    )
    assert read_index(dataset).equals(before)  # nothing half-written
    report = verify_dataset(dataset.url)
    assert not report.ok
