"""`dppp generate` where the environment is hostile: an output folder that holds a user's files, an S3
endpoint that stays down longer than the retry budget, actors killed with a shard half-written in the
system temp folder. A refusal or a stop is one line and a non-zero exit; nothing of the user's is lost; a
rerun resumes; what a killed writer left is removed, and only that."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from dppp.cli import main
from dppp.dataset.format import fragment_name, record_name, shard_name
from dppp.dataset.listing import committed_shards
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.generate import GenerationFailed, run_generate
from dppp.pipeline.plan import ShardPlan
from dppp.pipeline.worker import ShardWorker
from tests.conftest import s3_node_environment
from tests.pipeline.test_generate import gen_config

ROOT = Path(__file__).resolve().parents[2]


def test_a_non_empty_folder_that_is_no_dataset_is_refused(tmp_path, capsys):
    out = tmp_path / "photos"
    (out / "2024").mkdir(parents=True)
    (out / "2024" / "holiday.jpg").write_bytes(b"a user's picture")
    argv = ["generate", str(ROOT / "configs/demo.yaml"), "--out", str(out), "--identities", "2"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: generate.out: {out.as_uri()} is not empty and holds no dataset (no dataset.json; it has "
        "'2024/holiday.jpg'): refusing to write a dataset among other files; choose an empty or new folder\n"
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["2024", "2024/holiday.jpg"]
    assert (out / "2024" / "holiday.jpg").read_bytes() == b"a user's picture"
    assert main([*argv, "--overwrite"]) == 2  # --overwrite replaces a dataset, never a user's files
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["2024", "2024/holiday.jpg"]


@pytest.fixture(scope="module")
def ray_beside_s3(_moto_server):
    """A local Ray of 2 CPUs whose processes inherit the loopback S3 endpoint and fake credentials, as a
    cluster's nodes have their own (started after the environment is set)."""
    ray = pytest.importorskip("ray")
    with s3_node_environment(_moto_server):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


def committed_records(moto_s3, bucket: str) -> int:
    listed = moto_s3.client().list_objects_v2(Bucket=bucket, Prefix="ds/shards/")
    return sum(o["Key"].endswith(".json") for o in listed.get("Contents", []))


@pytest.mark.slow
def test_an_outage_longer_than_the_retry_budget_stops_the_run(ray_beside_s3, moto_s3):
    """The endpoint goes down after the first commits and stays down: the run stops at the first request
    that failed for a whole retry budget (1 s here) instead of rendering each remaining shard into it and
    retrying it `max_attempts` times; no shard is counted failed or retried; a rerun resumes."""
    url = moto_s3.bucket() + "/ds"
    bucket = url.removeprefix("s3://").split("/")[0]
    shards = 12
    config = gen_config(
        url, identities=shards, ids_per_shard=1, workers=1, max_attempts=3, **{"storage.retry_budget_s": 1}
    )
    outcome: dict = {}

    def run():
        try:
            run_generate(config, progress=False)
        except GenerationFailed as failed:
            outcome["summary"] = failed.summary

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while committed_records(moto_s3, bucket) < 1 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    moto_s3.stop()
    thread.join(120)
    assert not thread.is_alive(), "the run went on rendering into a dead endpoint"
    summary = outcome["summary"]
    assert summary.outage and summary.retries == 0 and not summary.failed
    stopped = re.fullmatch(
        r"the output storage is unreachable \(StorageUnavailable: cannot \w+ "
        + re.escape(url)
        + r"/(?:shards/shard-\d{6}\.\w+|dataset\.json): S3 endpoint "
        + re.escape(moto_s3.endpoint_url)
        + r" still failing after \d+ attempts over [\d.]+s \(retry budget 1s\): [^\n]+\); stopped rather "
        r"than render into it, (\d+) shard\(s\) not rendered",
        summary.stopped,
    )
    assert stopped, summary.stopped
    not_rendered = int(stopped.group(1))
    assert summary.shards_done + not_rendered == shards and not_rendered > shards // 2

    moto_s3.start()
    rerun = run_generate(config, progress=False)
    assert rerun.shards_skipped == summary.shards_done >= 1
    assert rerun.shards_done == not_rendered and len(committed_shards(open_storage(url))) == shards


def test_a_worker_removes_the_shard_folders_killed_writers_left_and_nothing_else(tmp_path, monkeypatch):
    """A worker SIGKILLed while writing a shard leaves `dppp-shard-<pid>-<shard>-*/shard.tar` in the temp
    folder; the next worker on the machine removes it, and only what is its own naming with a dead pid."""
    import subprocess
    import tempfile

    import dppp.pipeline.worker as worker_module
    from dppp.pipeline.plan import ShardPlan
    from dppp.pipeline.worker import ShardWorker

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a writer that is gone: its pid runs nothing now
    alive = subprocess.Popen(["sleep", "600"])  # a live writer (of this job or another)
    try:
        folders = {
            "stale": f"dppp-shard-{gone.pid}-000003-k2j4",
            "live": f"dppp-shard-{alive.pid}-000004-x9q1",
            "not ours": "dppp-shard-000005-abcd",  # another naming: its writer cannot be told
            "user's": f"dppp-shard-{gone.pid}-notes",
        }
        for name in folders.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "shard.tar").write_bytes(b"half a shard")
        worker = ShardWorker(gen_config(tmp_path / "ds", identities=1), threads=1)
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dppp-shard-"))
        assert left == sorted(v for k, v in folders.items() if k != "stale")
        written_in = []
        publish = worker_module.publish_shard
        monkeypatch.setattr(
            worker_module,
            "publish_shard",
            lambda storage, index, path, *a, **k: (
                written_in.append(Path(path).parent.name) or publish(storage, index, path, *a, **k)
            ),
        )
        plan = ShardPlan(0, (0,), 0)
        worker.publish(plan, worker.render(plan))
        assert [name.rsplit("-", 1)[0] for name in written_in] == [f"dppp-shard-{os.getpid()}-000000"]
        # its own folder is removed once published
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dppp-shard-")) == left
    finally:
        alive.kill()
        alive.wait()


def test_publishing_a_shard_removes_what_a_killed_writer_of_it_left(tmp_path):
    """A writer killed between its temp file and the rename (a lost node, a killed driver) leaves hidden
    temps beside the shard's objects; the shard's next publish removes them, and nobody else's."""
    storage = open_storage(str(tmp_path / "ds"))
    worker = ShardWorker(gen_config(tmp_path / "ds", identities=2, ids_per_shard=1), threads=1)
    shards = tmp_path / "ds" / "shards"
    shards.mkdir(parents=True)
    left = [
        f".{Path(key).name}.tmp-0123456789ab" for key in (shard_name(1), fragment_name(1), record_name(1))
    ]
    other = f".{Path(record_name(0)).name}.tmp-ba9876543210"  # shard 0's: a writer that may still be at work
    for name in [*left, other]:
        (shards / name).write_bytes(b"half written")
    plan = ShardPlan(1, (1,), 0)
    worker.publish(plan, worker.render(plan))
    assert sorted(p.name for p in shards.iterdir() if p.name.startswith(".")) == [other]
    assert [record.index for record in committed_shards(storage)] == [1]
