"""Storage on both backends: a local folder and a real S3 endpoint over HTTP (moto on loopback)."""

from __future__ import annotations

import os
import pickle
import threading
import time

import pytest

from dppp.dataset.limits import ShardStorageConfig
from dppp.foundation.errors import UserError
from dppp.foundation.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    check_key,
    redact_url,
)
from dppp.foundation.storage.local import LocalStorage, atomic_write
from dppp.foundation.storage.s3 import S3Storage
from dppp.foundation.storage.urls import open_storage, split_url
from tests.conftest import FAKE_CREDENTIALS


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    moto_s3 = request.getfixturevalue("moto_s3")
    return open_storage(moto_s3.bucket() + "/datasets/one", ShardStorageConfig(retry_budget_s=5))


def test_round_trip(storage, tmp_path):
    source = tmp_path / "payload.bin"
    payload = os.urandom(300_000)
    source.write_bytes(payload)
    storage.put_file(source, "shards/b.bin")
    storage.put_bytes(b"{}", "dataset.json")
    storage.put_bytes(b"a", "shards/a.txt")

    assert storage.list() == [
        ObjectInfo("dataset.json", 2),
        ObjectInfo("shards/a.txt", 1),
        ObjectInfo("shards/b.bin", len(payload)),
    ]
    assert [o.key for o in storage.list("shards/")] == ["shards/a.txt", "shards/b.bin"]
    assert storage.list("nothing/") == []
    # walk: the same objects in any order, as they come (a generator: nothing listed up front)
    assert sorted(storage.walk()) == storage.list() and sorted(storage.walk("shards/")) == storage.list(
        "shards/"
    )
    assert not isinstance(storage.walk(), list) and list(storage.walk("nothing/")) == []
    assert storage.stat("shards/b.bin") == ObjectInfo("shards/b.bin", len(payload))
    assert (
        storage.stat("missing") is None and not storage.exists("missing") and storage.exists("dataset.json")
    )
    with storage.open_read("shards/b.bin") as stream:
        chunks = [stream.read(65536) for _ in range(5)]
        rest = stream.read()
    assert b"".join(chunks) + rest == payload
    assert storage.read_bytes("dataset.json") == b"{}"

    storage.put_bytes(b"bb", "shards/a.txt")  # overwrite is atomic too
    assert storage.read_bytes("shards/a.txt") == b"bb"
    storage.delete("shards/a.txt")
    storage.delete("shards/a.txt")  # deleting a missing object is fine
    assert [o.key for o in storage.list()] == ["dataset.json", "shards/b.bin"]
    with pytest.raises(ObjectNotFound):
        storage.read_bytes("shards/a.txt")


def test_keys_are_checked(storage):
    for bad in ["", "/abs", "a/../b", "a//b", "./a", "a\nb", "a\\b"]:
        with pytest.raises(ValueError):
            storage.put_bytes(b"x", bad)
    assert check_key("shards/shard-000001.tar") == "shards/shard-000001.tar"


def test_local_publish_is_atomic(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put_bytes(b"old", "obj")

    class Boom(Exception):
        pass

    def failing_write(out):
        out.write(b"half-written")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(storage.root / "obj", failing_write)
    assert storage.read_bytes("obj") == b"old"
    assert [o.key for o in storage.list()] == ["obj"]  # no temp file left behind


def test_open_storage_urls(tmp_path):
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    local = open_storage(tmp_path.as_uri())
    assert isinstance(local, LocalStorage) and local.root == tmp_path
    s3 = open_storage("s3://bucket/some/prefix/")
    assert isinstance(s3, S3Storage) and s3.bucket == "bucket" and s3.prefix == "some/prefix"
    assert s3.url == "s3://bucket/some/prefix" and s3.url_for("x/y") == "s3://bucket/some/prefix/x/y"
    for bad, message in [
        ("s3://", "no bucket"),
        ("s3:///x", "no bucket"),
        ("gs://b/x", "unsupported"),
        ("", "empty"),
        ("file://host/x", "names host"),
        ("s3://Bad_Bucket!", "bucket name"),
    ]:
        with pytest.raises(UserError, match=message):
            open_storage(bad)
    storage, key = split_url("s3://bucket/ds/shards/shard-000001.tar")
    assert storage.url == "s3://bucket/ds/shards" and key == "shard-000001.tar"


def test_redact_url():
    assert redact_url("http://user:secret@minio:9000/x") == "http://minio:9000/x"
    assert redact_url("s3://bucket/x") == "s3://bucket/x"
    # a NAME:URL spec and a message: every URL inside the text loses its credentials, the rest stays
    assert redact_url("synthetic:s3://k:s@h/ds") == "synthetic:s3://h/ds"
    assert redact_url("cannot reach http://a:b@x:9000/ and https://c@y/z, mail me@home") == (
        "cannot reach http://x:9000/ and https://y/z, mail me@home"
    )
    # a password with a '/' (AWS secret keys may hold one) goes too; a host:port and a path with '@' stay
    assert redact_url("s3://AKID:ab/cd+ef@bucket/x") == "s3://bucket/x"
    assert redact_url("http://minio:9000/bucket/data@v2") == "http://minio:9000/bucket/data@v2"


def test_local_storage_states_its_folder_and_needs_no_worker_env(tmp_path):
    storage = open_storage(str(tmp_path / "root"))
    assert storage.local_root == tmp_path / "root"
    assert storage.worker_env() == {}
    filesystem, path = storage.arrow_filesystem()
    storage.put_bytes(b"abc", "d/k")
    with filesystem.open_input_stream(f"{path}/d/k") as stream:
        assert stream.read() == b"abc"


def test_s3_storage_reaches_pyarrow_and_workers_through_its_own_settings(moto_s3, monkeypatch):
    storage = open_storage(moto_s3.bucket() + "/runs", ShardStorageConfig())
    assert storage.local_root is None
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    env = storage.worker_env()
    # settings only: Ray writes what travels to its actors to its logs; credentials come from the node
    assert env == {
        "AWS_ENDPOINT_URL": moto_s3.endpoint_url,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
    # the filesystem Ray Train writes checkpoints through reaches the very objects boto3 reads here
    filesystem, path = storage.arrow_filesystem()
    assert path == storage.url.removeprefix("s3://")
    with filesystem.open_output_stream(f"{path}/ckpt/meta.json") as out:
        out.write(b"{}")
    assert storage.read_bytes("ckpt/meta.json") == b"{}"
    # a profile names a place on this machine; an endpoint's user:password@ stays here
    monkeypatch.setenv("AWS_PROFILE", "someone")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://user:pass@minio:9000")
    assert storage.worker_env()["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert "AWS_PROFILE" not in storage.worker_env()


def test_s3_storage_pickles_without_its_client(moto_s3):
    storage = open_storage(moto_s3.bucket())
    storage.put_bytes(b"x", "k")  # builds the client
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.read_bytes("k") == b"x"


def test_s3_missing_bucket_fails_at_once_with_clear_message(moto_s3):
    storage = open_storage("s3://no-such-bucket-here/x", ShardStorageConfig(retry_budget_s=30))
    start = time.monotonic()
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist") as info:
        storage.put_bytes(b"x", "k")
    assert time.monotonic() - start < 5  # permanent: no retry
    assert not any(value in str(info.value) for value in FAKE_CREDENTIALS.values() if len(value) > 10)


def test_s3_no_credentials_is_a_clear_error(moto_s3, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    storage = open_storage(moto_s3.bucket(), ShardStorageConfig(retry_budget_s=2))
    with pytest.raises(StorageError, match="no S3 credentials found"):
        storage.put_bytes(b"x", "k")


def _multipart_config(budget):
    return ShardStorageConfig(
        retry_budget_s=budget,
        retry_initial_delay_s=0.1,
        retry_max_delay_s=0.5,
        multipart_threshold_mb=5,
        multipart_chunk_mb=5,
    )


def test_s3_publish_survives_a_short_outage(moto_s3, tmp_path):
    """The endpoint goes down once the multipart upload is sending and comes back 2 s later: every part
    refused meanwhile is retried within its budget, and the put completes."""
    storage = open_storage(moto_s3.bucket(), _multipart_config(budget=30))
    source = tmp_path / "big.bin"
    payload = os.urandom(11 << 20)  # three parts
    source.write_bytes(payload)
    outages = []

    def cut_off_after_first_part(n):
        if not outages:
            moto_s3.stop()
            outages.append(time.monotonic())
            threading.Timer(2.0, moto_s3.start).start()

    storage.put_file(source, "big.bin", progress=cut_off_after_first_part)
    assert outages and time.monotonic() - outages[0] >= 2.0
    assert storage.read_bytes("big.bin") == payload


def test_s3_outage_beyond_budget_fails_clearly_and_publishes_nothing(moto_s3, tmp_path):
    storage = open_storage(moto_s3.bucket(), _multipart_config(budget=1.5))
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 << 20))
    with pytest.raises(
        StorageUnavailable, match=r"still failing after \d+ attempts .*retry budget 1.5s"
    ) as info:
        storage.put_file(source, "big.bin", progress=lambda n: moto_s3.stop())
    message = str(info.value)
    assert "s3://" in message and "testing-secret" not in message and "testing-access" not in message
    moto_s3.start()
    assert storage.stat("big.bin") is None and storage.list() == []


def test_s3_read_is_streamed(moto_s3):
    storage = open_storage(moto_s3.bucket())
    payload = os.urandom(12 << 20)
    storage.put_bytes(payload, "blob")
    with storage.open_read("blob") as stream:
        first = stream.read(1000)
        assert first == payload[:1000]
        time.sleep(0.5)  # let the read-ahead thread run as far as it may
        # It holds a bounded read-ahead, not the object: 4 queued chunks + 1 in hand + 1 being put.
        assert stream.raw._fetched <= 6 << 20
        assert first + stream.read() == payload
    with storage.open_read("blob") as stream:
        assert stream.read(10) == payload[:10]  # closing early stops the read-ahead thread
    assert not stream.raw._thread.is_alive()
    abandoned = storage.open_read("blob")
    abandoned.read(10)
    thread = abandoned.raw._thread
    del abandoned  # dropped without close(), as an abandoned iterator would: collected, thread stopped
    import gc

    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_what_the_disk_refuses_is_one_line_naming_the_path(tmp_path):
    from dppp.foundation.storage.local import os_error_message

    storage = open_storage(str(tmp_path / "root"))
    (tmp_path / "root" / "shards" / "x.tar").mkdir(parents=True)  # a folder squats on the object's name
    with pytest.raises(StorageError) as info:
        storage.put_bytes(b"data", "shards/x.tar")
    assert str(info.value) == f"cannot write {tmp_path}/root/shards/x.tar: is a directory"
    assert [p.name for p in (tmp_path / "root" / "shards").iterdir()] == ["x.tar"]  # no temporary file left
    # pyarrow's OSErrors carry no errno: their own first line is the problem
    arrow = OSError("error writing bytes to file. Detail: [errno 28] No space left on device\nmore")
    assert os_error_message(arrow, "write", "/tmp/i.parquet") == (
        "cannot write /tmp/i.parquet: error writing bytes to file. Detail: [errno 28] No space left on device"
    )


def test_s3_multipart_upload_goes_up_in_parallel_parts_and_lands_whole(moto_s3, tmp_path):
    """Above the threshold, boto3's managed transfer: parts in flight at once, one whole object at the end."""
    storage = open_storage(moto_s3.bucket() + "/ds", _multipart_config(budget=30))
    source = tmp_path / "big.bin"
    payload = os.urandom(21 << 20)  # five parts of 5 MiB
    source.write_bytes(payload)
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def part_started(**_):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.2)  # hold the part so the others start meanwhile

    def part_done(**_):
        with lock:
            in_flight[0] -= 1

    storage.client.meta.events.register("before-call.s3.UploadPart", part_started)
    storage.client.meta.events.register("after-call.s3.UploadPart", part_done)
    sent = []
    storage.put_file(source, "shards/big.bin", progress=sent.append)
    assert most[0] > 1 and sum(sent) == len(payload)
    head = moto_s3.client().head_object(Bucket=storage.bucket, Key="ds/shards/big.bin")
    assert head["ETag"].strip('"').endswith("-5")  # a completed multipart upload of five parts
    assert storage.read_bytes("shards/big.bin") == payload
    # exactly the threshold stays one PUT, as before the managed transfer
    source.write_bytes(payload[: 5 << 20])
    storage.put_file(source, "exact.bin")
    assert "-" not in moto_s3.client().head_object(Bucket=storage.bucket, Key="ds/exact.bin")["ETag"]


def test_s3_failed_multipart_upload_leaves_no_object_and_no_upload(moto_s3, tmp_path):
    """A part refused for good (credentials expired mid-upload): the upload is aborted, the old object kept."""
    storage = open_storage(moto_s3.bucket(), _multipart_config(budget=30))
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 << 20))
    storage.put_bytes(b"old", "big.bin")

    def refuse_part_two(request, **_):
        return _error_response(403, "AccessDenied") if "partNumber=2" in request.url else None

    storage.client.meta.events.register("before-send.s3.UploadPart", refuse_part_two)
    with pytest.raises(StorageError, match=r"cannot write s3://.*/big.bin: access denied \(AccessDenied\)"):
        storage.put_file(source, "big.bin")
    assert storage.read_bytes("big.bin") == b"old"  # the old object, never a part of the new one
    assert "Uploads" not in moto_s3.client().list_multipart_uploads(Bucket=storage.bucket)  # aborted


def _error_response(status: int, code: str):
    """A botocore response of an S3 error, returned by a before-send hook instead of sending the request."""
    from botocore.awsrequest import AWSResponse

    class Raw:
        def stream(self):
            yield f"<Error><Code>{code}</Code><Message>slow down</Message></Error>".encode()

    return AWSResponse("http://s3", status, {}, Raw())


def test_s3_error_responses_are_retried_within_the_budget_and_permanent_ones_are_not(moto_s3):
    storage = open_storage(moto_s3.bucket(), _multipart_config(budget=1.0))
    refusals = []

    def throttle_twice(**_):
        if len(refusals) < 2:
            refusals.append(1)
            return _error_response(503, "SlowDown")
        return None

    storage.client.meta.events.register("before-send.s3.PutObject", throttle_twice)
    storage.put_bytes(b"x", "k")
    assert len(refusals) == 2 and storage.read_bytes("k") == b"x"

    always = []
    storage.client.meta.events.register(
        "before-send.s3.DeleteObject", lambda **_: always.append(1) or _error_response(503, "SlowDown")
    )
    with pytest.raises(
        StorageUnavailable, match=r"cannot delete .* still failing after \d+ attempts .*SlowDown"
    ) as info:
        storage.delete("k")
    assert len(always) == int(str(info.value).split("after ")[1].split()[0]) > 1  # one budget, not two

    denied = []
    storage.client.meta.events.register(
        "before-send.s3.HeadObject", lambda **_: denied.append(1) or _error_response(403, "AccessDenied")
    )
    with pytest.raises(StorageError, match="access denied"):
        storage.stat("k")
    assert len(denied) == 1  # permanent: no retry


def test_s3_listing_pages_through_the_paginator(moto_s3):
    storage = open_storage(moto_s3.bucket() + "/ds")
    keys = [f"shards/{i:03d}" for i in range(10)]
    for key in keys:
        storage.put_bytes(b"x", key)
    storage.put_bytes(b"y", "other")
    pages = []
    storage.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: pages.append(1))
    storage.list_page_size = 3
    assert [o.key for o in storage.list("shards/")] == keys
    assert len(pages) == 4
    # StartAfter holds across pages: the listing resumes after the key, not from the first page again
    assert [o.key for o in storage.iter_list("shards/", after="shards/004")] == keys[5:]
    assert [o.key for o in storage.iter_list(after="shards/008")] == ["shards/009"]


@pytest.mark.slow
def test_s3_listing_beyond_one_thousand_keys(moto_s3):
    """S3 answers at most 1,000 keys a request: a listing of more follows the continuation token."""
    from concurrent.futures import ThreadPoolExecutor

    storage = open_storage(moto_s3.bucket())
    keys = [f"k/{i:05d}" for i in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: storage.put_bytes(b"", key), keys))
    assert [o.key for o in storage.list("k/")] == keys
    assert [o.key for o in storage.iter_list("k/", after="k/00998")] == keys[999:]
