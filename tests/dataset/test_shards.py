"""The shard format: deterministic tars, a safe streaming reader, commit records and the index."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile

import pytest

from dppp.dataset.format import FIXED_MTIME, UnsafeShardError, parse_shard_key, record_name, shard_name
from dppp.dataset.index import build_index, write_index
from dppp.dataset.limits import ShardStorageConfig
from dppp.dataset.listing import committed_shards
from dppp.dataset.records import read_dataset_manifest, read_index, write_dataset_manifest
from dppp.dataset.shard_reader import ChunkedReader, iter_members, read_shard
from dppp.dataset.shard_writer import Sample, ShardWriter, write_shard
from dppp.foundation.errors import DataError
from dppp.foundation.redaction import strip_secrets
from dppp.foundation.storage.base import StorageUnavailable
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.publish import publish_shard
from tests.conftest import pickle_payload, tar_bytes


def test_names():
    assert shard_name(12) == "shards/shard-000012.tar" and record_name(12) == "shards/shard-000012.json"
    assert parse_shard_key("shards/shard-000012.tar") == (12, "tar")
    assert parse_shard_key("shards/shard-000012.json") == (12, "json")
    assert parse_shard_key("shards/junk.tar") is None


def test_writer_is_deterministic_and_sorted(tmp_path, make_samples):
    samples = make_samples(n_ids=3, views=2)
    info = write_shard(samples, tmp_path / "a.tar")
    write_shard(list(reversed(samples)), tmp_path / "b.tar")
    data = (tmp_path / "a.tar").read_bytes()
    assert data == (tmp_path / "b.tar").read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.bytes == len(data)
    assert info.count == 6 and info.pids == (0, 1, 2) and info.image_format == "jpg"
    with tarfile.open(tmp_path / "a.tar") as tar:
        entries = tar.getmembers()
    names = [e.name for e in entries]
    assert names == sorted(names) and names[:4] == [
        "p000000_v000.cls",
        "p000000_v000.jpg",
        "p000000_v000.json",
        "p000000_v000.txt",
    ]
    assert {(e.mtime, e.uid, e.gid, e.uname, e.gname, e.mode) for e in entries} == {
        (FIXED_MTIME, 0, 0, "", "", 0o644)
    }
    assert list(tmp_path.iterdir()) != [] and not any(".tmp-" in p.name for p in tmp_path.iterdir())


def test_writer_output_is_what_tarfile_addfile_writes(tmp_path, make_samples):
    """The writer batches a sample's members into one write; the bytes must stay exactly tarfile's own."""
    samples = make_samples(n_ids=2, views=3, ext="png") + make_samples(n_ids=1, views=2, first_pid=5)
    samples[0].metadata["prompt"] = "é" * 300  # a json member of a size that is not a multiple of 512
    info = write_shard(samples, tmp_path / "ours.tar")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in sorted(samples, key=lambda s: s.key):
            for name, data in sample.members():
                entry = tarfile.TarInfo(name)
                entry.size, entry.mtime, entry.mode, entry.uname, entry.gname = (
                    len(data),
                    FIXED_MTIME,
                    0o644,
                    "",
                    "",
                )
                tar.addfile(entry, io.BytesIO(data))
    assert (tmp_path / "ours.tar").read_bytes() == buffer.getvalue()
    assert info.bytes == len(buffer.getvalue()) and info.bytes % tarfile.RECORDSIZE == 0


def test_writer_rejects_bad_samples(tmp_path, make_samples):
    sample = make_samples(1, 1)[0]
    bad = [
        Sample("p1.v2", b"x", "jpg", {}, "", 1),  # dot in key
        Sample("p1/v2", b"x", "jpg", {}, "", 1),
        Sample("p1", b"x", "pkl", {}, "", 1),
        Sample("p1", b"x", "jpg", {"pid": 2}, "", 1),
    ]
    for item in bad:
        with pytest.raises(ValueError):
            write_shard([item], tmp_path / "x.tar")
    with pytest.raises(ValueError, match="duplicate"):
        write_shard([sample, sample], tmp_path / "x.tar")
    with pytest.raises(ValueError, match="increasing key order"):
        with ShardWriter(io.BytesIO()) as writer:
            writer.write(make_samples(1, 2)[1])
            writer.write(make_samples(1, 2)[0])
    assert not (tmp_path / "x.tar").exists()


def test_read_back(tmp_path, make_samples):
    samples = make_samples(n_ids=2, views=2, ext="png")
    write_shard(samples, tmp_path / "s.tar")
    read = list(read_shard(tmp_path / "s.tar"))
    assert [r["__key__"] for r in read] == [s.key for s in samples]
    for got, want in zip(read, samples, strict=True):
        assert got["png"] == want.image_bytes and got["json"] == want.metadata
        assert got["txt"] == want.prompt and got["cls"] == want.pid
    decoded = next(read_shard((tmp_path / "s.tar").as_uri(), decode_images=True))
    assert decoded["png"].mode == "RGB" and decoded["png"].size == (32, 64)
    only_json = next(read_shard(tmp_path / "s.tar", include={"json"}))
    assert set(only_json) == {"__key__", "__url__", "json"}


def test_secrets_never_reach_a_shard_or_the_manifest(tmp_path, make_samples):
    sample = make_samples(1, 1)[0]
    sample.metadata["renderer"]["hf_token"] = "hf_SECRETVALUE"
    write_shard([sample], tmp_path / "s.tar")
    assert b"SECRETVALUE" not in (tmp_path / "s.tar").read_bytes()
    manifest = {
        "generate": {
            "storage": {
                "endpoint_url": "http://user:pw1234@minio:9000",
                "aws_secret_access_key": "abc",
                "Password": "x",
            },
            "prompts": {"max_tokens": 77, "tokenizer": "clip"},
        }
    }
    storage = open_storage(str(tmp_path / "ds"))
    write_dataset_manifest(storage, manifest)
    text = storage.read_bytes("dataset.json").decode()
    assert "pw1234" not in text and "abc" not in text and "Password" not in text
    assert read_dataset_manifest(storage)["generate"]["prompts"] == {
        "max_tokens": 77,
        "tokenizer": "clip",
    }
    assert strip_secrets({"a": [{"token": 1, "b": 2}]}) == {"a": [{"b": 2}]}
    with pytest.raises(DataError, match="no dataset.json"):
        read_dataset_manifest(open_storage(str(tmp_path / "empty")))


@pytest.mark.parametrize("chunk_size", [1, 7, 512, 1000, 1 << 20])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_chunked_reader_walks_any_tar_and_passes_every_byte_once(make_samples, chunk_size, fmt):
    """Members that straddle chunks, GNU long names and PAX headers (tarfile's own walk handles them) read
    back exactly, and on_chunk sees the whole stream once, in order: what verify's sha256 relies on."""
    entries = [m for s in make_samples(2, 2) for m in s.members()]
    long_key = "p" + "0" * 150  # > 100 characters: a GNU 'L' or PAX 'x' header before the member
    if fmt != tarfile.USTAR_FORMAT:  # USTAR cannot hold such a name
        entries.append((f"{long_key}.txt", b"long"))
    data = tar_bytes(entries, format=fmt)
    seen = []
    reader = ChunkedReader(io.BytesIO(data), chunk_size=chunk_size, on_chunk=seen.append)
    members = list(iter_members(reader, wanted={"json", "txt", "cls"}))
    reader.drain()
    assert b"".join(seen) == data and reader.pulled == len(data)
    assert [m.name for m in members] == [name for name, _ in entries]
    want = dict(entries)
    assert all(m.data == (want[m.name] if m.ext != "jpg" else None) for m in members)
    back = ChunkedReader(io.BytesIO(data), chunk_size=chunk_size)
    back.seek(3000)
    with pytest.raises(io.UnsupportedOperation, match="cannot seek back"):
        back.seek(0)


def test_pickle_member_is_never_decoded(tmp_path, make_samples):
    marker = tmp_path / "pwned"
    payload = pickle_payload(marker)
    pickle.loads(payload).close()  # the payload is live: unpickling really creates the file
    assert marker.exists()
    marker.unlink()
    good = make_samples(1, 1)[0]
    entries = good.members() + [
        (f"{good.key}.pickle", payload),
        (f"{good.key}.pyd", payload),
        (f"{good.key}.npy", payload),
        ("p000000_v001.pth", payload),
    ]
    (tmp_path / "evil.tar").write_bytes(tar_bytes(entries))
    skipped = []
    samples = list(read_shard(tmp_path / "evil.tar", on_skip=skipped.append))
    assert [s["__key__"] for s in samples] == ["p000000_v000", "p000000_v001"]
    assert set(samples[0]) == {"__key__", "__url__", "cls", "jpg", "json", "txt"}
    assert sorted(m.ext for m in skipped) == ["npy", "pickle", "pth", "pyd"]
    assert all(m.data is None and "not allow-listed" in m.skipped for m in skipped)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, problem",
    [("../evil.jpg", "'..'"), ("/etc/evil.jpg", "absolute"), ("a/b.jpg", "'/'"), ("p1\x1b.jpg", "control")],
)
def test_unsafe_member_names_are_rejected(tmp_path, name, problem):
    (tmp_path / "bad.tar").write_bytes(tar_bytes([(name, b"x")]))
    with pytest.raises(UnsafeShardError, match=problem):
        list(read_shard(tmp_path / "bad.tar"))


def test_damaged_tars_are_data_errors(tmp_path, make_samples):
    write_shard(make_samples(2, 2), tmp_path / "s.tar")
    data = (tmp_path / "s.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(DataError, match="truncated or corrupted"):
        list(read_shard(tmp_path / "cut.tar"))
    sample = make_samples(1, 2)
    members = sample[0].members()
    (tmp_path / "split.tar").write_bytes(tar_bytes(members[:2] + sample[1].members() + members[2:]))
    with pytest.raises(DataError, match="not contiguous"):
        list(read_shard(tmp_path / "split.tar"))
    (tmp_path / "badjson.tar").write_bytes(tar_bytes([("p1.json", b"{not json")]))
    with pytest.raises(DataError, match="cannot decode json"):
        list(read_shard(tmp_path / "badjson.tar"))


@pytest.fixture(params=["local", "s3"])
def dataset(request, tmp_path):
    if request.param == "local":
        return open_storage(str(tmp_path / "dataset"))
    return open_storage(
        request.getfixturevalue("moto_s3").bucket() + "/ds", ShardStorageConfig(retry_budget_s=5)
    )


def test_publish_commit_and_index_round_trip(dataset, tmp_path, make_samples):
    for index in range(2):
        samples = make_samples(n_ids=2, views=3, first_pid=2 * index)
        info = write_shard(samples, tmp_path / f"{index}.tar")
        record = publish_shard(dataset, index, tmp_path / f"{index}.tar", info, timings={"render_s": 1.5})
        assert record.count == 6 and record.pids == [2 * index, 2 * index + 1]
    records = committed_shards(dataset)
    assert [r.index for r in records] == [0, 1] and records[1].timings["render_s"] == 1.5
    assert json.loads(dataset.read_bytes(record_name(1)))["sha256"] == records[1].sha256

    streamed = list(read_shard(dataset.url_for(shard_name(1))))
    assert [s["cls"] for s in streamed] == [2, 2, 2, 3, 3, 3]

    assert write_index(dataset) == 12
    table = read_index(dataset)
    assert table.num_rows == 12 and table.column("key").to_pylist() == sorted(table.column("key").to_pylist())
    assert {"attr_gender", "attr_upper_color", "attr_scene", "pid", "camid", "view", "shard"} <= set(
        table.column_names
    )
    row = table.slice(7, 1).to_pylist()[0]
    meta = next(
        s for s in read_shard(dataset.url_for(shard_name(row["shard"]))) if s["__key__"] == row["key"]
    )["json"]
    assert row["pid"] == meta["pid"] and row["camid"] == meta["camid"] and row["prompt"] == meta["prompt"]
    assert all(row[f"attr_{k}"] == v for k, v in meta["attributes"].items())
    assert build_index(dataset).equals(table)


def test_records_reject_malformed_json(tmp_path):
    storage = open_storage(str(tmp_path))
    storage.put_bytes(b'{"index": 0}', record_name(0))
    with pytest.raises(DataError, match="shard-000000.json: invalid shard record"):
        committed_shards(storage)


def test_failed_republish_leaves_no_committed_partial_shard(moto_s3, tmp_path, make_samples):
    """A committed shard re-published during an outage longer than the retry budget: error, and no record."""
    config = ShardStorageConfig(
        retry_budget_s=1.5, retry_initial_delay_s=0.1, multipart_threshold_mb=5, multipart_chunk_mb=5
    )
    storage = open_storage(moto_s3.bucket(), config)
    small = write_shard(make_samples(1, 2), tmp_path / "small.tar")
    publish_shard(storage, 0, tmp_path / "small.tar", small)
    big_samples = make_samples(1, 2, size=(1800, 1800), ext="png")  # random-ish PNGs > 5 MB in total
    big_samples = [
        Sample(s.key, s.image_bytes + bytes(3 << 20), "png", s.metadata, s.prompt, s.pid) for s in big_samples
    ]
    big = write_shard(big_samples, tmp_path / "big.tar")
    assert big.bytes > 5 << 20
    with pytest.raises(StorageUnavailable, match="retry budget"):
        publish_shard(storage, 0, tmp_path / "big.tar", big, progress=lambda n: moto_s3.stop())
    moto_s3.start()
    assert committed_shards(storage) == []
    assert storage.stat(shard_name(0)).size == small.bytes  # the multipart upload never became visible


def test_publish_survives_outage(moto_s3, tmp_path, make_samples):
    """The endpoint stops right after the tar is up, before the commit record: the record waits for it."""
    import threading
    import time

    storage = open_storage(moto_s3.bucket(), ShardStorageConfig(retry_budget_s=30, retry_initial_delay_s=0.1))
    info = write_shard(make_samples(2, 2), tmp_path / "s.tar")
    stopped = []

    def stop_after_tar(n):
        moto_s3.stop()
        stopped.append(time.monotonic())
        threading.Timer(2.0, moto_s3.start).start()

    record = publish_shard(storage, 3, tmp_path / "s.tar", info, progress=stop_after_tar)
    assert stopped and time.monotonic() - stopped[0] >= 2.0
    assert record.timings["publish_s"] < 2.0  # the tar went up before the outage
    assert [r.index for r in committed_shards(storage)] == [3]
    assert len(list(read_shard(storage.url_for(shard_name(3))))) == 4
