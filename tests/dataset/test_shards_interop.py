"""Stock readers (webdataset, Ray Data, tarfile) see the same samples as dppp's reader, locally and on S3."""

from __future__ import annotations

import json
import tarfile

import pytest

from dppp.dataset.format import shard_name
from dppp.dataset.index import write_index
from dppp.dataset.records import read_index
from dppp.dataset.shard_reader import read_shard
from dppp.dataset.shard_writer import write_shard
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.publish import publish_shard


def _ours(path):
    return {s["__key__"]: (s["jpg"], s["json"], s["txt"], s["cls"]) for s in read_shard(path)}


@pytest.fixture
def shard(tmp_path, make_samples):
    path = tmp_path / "shard-000000.tar"
    write_shard(make_samples(n_ids=3, views=2), path)
    return path


def test_tarfile_reads_the_same_samples(shard):
    found = {}
    with tarfile.open(shard) as tar:
        for entry in tar:
            key, ext = entry.name.split(".", 1)
            found.setdefault(key, {})[ext] = tar.extractfile(entry).read()
    stock = {k: (m["jpg"], json.loads(m["json"]), m["txt"].decode(), int(m["cls"])) for k, m in found.items()}
    assert stock == _ours(shard)


def test_webdataset_reads_the_same_samples(shard):
    import webdataset as wds

    dataset = wds.WebDataset(str(shard), shardshuffle=False).decode()
    stock = {s["__key__"]: (s["jpg"], s["json"], s["txt"], s["cls"]) for s in dataset}
    assert stock.keys() == _ours(shard).keys()
    ours = _ours(shard)
    for key, (image, meta, text, cls) in stock.items():
        assert meta == ours[key][1] and text == ours[key][2] and cls == ours[key][3]
        assert image is not None  # the default decoder turns jpg into an array; bytes match below
    raw = {s["__key__"]: s["jpg"] for s in wds.WebDataset(str(shard), shardshuffle=False)}
    assert raw == {k: v[0] for k, v in ours.items()}


def test_pyarrow_reads_the_index_from_s3(moto_s3, tmp_path, make_samples):
    """pyarrow's own S3 filesystem opens index.parquet on the endpoint and finds the shards' samples."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    url = moto_s3.bucket()
    storage = open_storage(url + "/ds")
    info = write_shard(make_samples(2, 2), tmp_path / "s.tar")
    publish_shard(storage, 0, tmp_path / "s.tar", info)
    write_index(storage)
    fs = pafs.S3FileSystem(
        endpoint_override=moto_s3.endpoint_url,
        scheme="http",
        region="us-east-1",
        access_key="testing-access-key-id",
        secret_key="testing-secret-access-key",
        session_token="testing-session-token",
    )
    table = pq.read_table(f"{url[5:]}/ds/index.parquet", filesystem=fs)
    assert table.equals(read_index(storage))
    assert sorted(table.column("key").to_pylist()) == sorted(
        s["__key__"] for s in read_shard(storage.url_for(shard_name(0)))
    )


@pytest.mark.slow
def test_ray_data_reads_the_same_samples(shard):
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        rows = ray.data.read_webdataset(str(shard), decoder=None).take_all()
    finally:
        ray.shutdown()
    ours = _ours(shard)
    assert sorted(r["__key__"] for r in rows) == sorted(ours)
    for row in rows:
        image, meta, text, cls = ours[row["__key__"]]
        assert bytes(row["jpg"]) == image
        got_meta = row["json"]
        assert (json.loads(got_meta) if isinstance(got_meta, (bytes, str)) else got_meta) == meta


def test_aws_cli_lists_and_copies_a_published_shard(moto_s3, tmp_path, make_samples):
    """The stock aws CLI on the same endpoint sees the objects and fetches a shard byte for byte."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    aws = Path(sys.executable).with_name("aws")
    if not aws.exists() and not shutil.which("aws"):
        pytest.skip("the aws CLI is not installed (pip install awscli, part of the dev extras)")
    aws = str(aws) if aws.exists() else shutil.which("aws")
    url = moto_s3.bucket() + "/ds"
    storage = open_storage(url)
    info = write_shard(make_samples(2, 2), tmp_path / "s.tar")
    publish_shard(storage, 0, tmp_path / "s.tar", info)
    listing = subprocess.run(
        [aws, "s3", "ls", "--recursive", url + "/"], capture_output=True, text=True, check=True
    )
    assert "ds/shards/shard-000000.tar" in listing.stdout and "ds/shards/shard-000000.json" in listing.stdout
    subprocess.run(
        [aws, "s3", "cp", storage.url_for(shard_name(0)), str(tmp_path / "copy.tar")],
        capture_output=True,
        check=True,
    )
    assert (tmp_path / "copy.tar").read_bytes() == (tmp_path / "s.tar").read_bytes()
