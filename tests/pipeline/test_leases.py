"""Shard leases on real storage (a folder, and S3 over HTTP on loopback): the conditional writes they
are built on, taking, renewing, expiring and releasing, and the queue that hands leased shards out."""

from __future__ import annotations

import threading
import time

import pytest

from dppp.dataset.format import lease_name
from dppp.foundation.errors import SettingError
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.leases import (
    JobIdentity,
    LeasedQueue,
    Leases,
    live_leases,
    parse_lease,
    refuse_while_leased,
)
from dppp.pipeline.plan import ShardPlan


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(str(tmp_path / "dataset"))
    moto_s3 = request.getfixturevalue("moto_s3")
    return open_storage(moto_s3.bucket() + "/dataset")


def job(name: str) -> JobIdentity:
    return JobIdentity(job=name * 8, host=f"host-{name}", pid=100, started="2026-01-01T00:00:00+00:00")


def test_conditional_writes(storage):
    first = storage.create_bytes(b"one", "shards/x.lease")
    assert first and storage.create_bytes(b"two", "shards/x.lease") is None
    assert storage.read_versioned("shards/x.lease") == (b"one", first)
    second = storage.replace_bytes_if(b"two", "shards/x.lease", first)
    assert second and second != first
    assert storage.replace_bytes_if(b"three", "shards/x.lease", first) is None  # a stale version loses
    assert storage.read_bytes("shards/x.lease") == b"two"
    assert not storage.delete_if("shards/x.lease", first)
    assert storage.delete_if("shards/x.lease", second)
    assert storage.read_versioned("shards/x.lease") is None
    assert storage.replace_bytes_if(b"four", "shards/x.lease", second) is None  # gone: nothing to swap
    assert [obj.key for obj in storage.list("")] == []  # no claim or temp file left behind


def test_a_live_lease_is_respected_an_expired_one_taken_over(storage):
    a = Leases(storage, job("a"), ttl_s=1.5)  # its heartbeat renews it every 0.5 s
    b = Leases(storage, job("b"), ttl_s=60)
    assert a.take(3) is None and 3 in a.held
    holder = b.take(3)
    assert holder is not None and holder.host == "host-a" and holder.pid == 100 and holder.live()
    assert [lease.job for lease in live_leases(storage)] == ["a" * 8]
    with pytest.raises(SettingError, match="host-a, pid 100, started 2026-01-01"):
        refuse_while_leased(storage, job("b"), "overwrite")
    refuse_while_leased(storage, job("a"), "overwrite")  # its own leases do not stop a job
    a._stop.set()  # job a dies: no more heartbeats, no release
    a._thread.join()
    time.sleep(1.6)
    assert b.take(3) is None and [lease.job for lease in b.taken_over] == ["a" * 8]
    lease = parse_lease(storage.read_bytes(lease_name(3)))
    assert lease.job == "b" * 8 and lease.live()
    a.renew()  # the dead job wakes up: its lease is gone, it says so instead of taking it back
    assert a.lost == [3] and 3 not in a.held
    b.close()
    assert live_leases(storage) == [] and not storage.exists(lease_name(3))


def test_heartbeat_keeps_a_lease_alive_past_its_ttl(tmp_path):
    storage = open_storage(str(tmp_path))
    a = Leases(storage, job("a"), ttl_s=0.6)
    b = Leases(storage, job("b"), ttl_s=60)
    assert a.take(0) is None
    time.sleep(1.5)  # 2.5 ttls: renewed every ttl/3
    assert b.take(0) is not None and a.lost == []
    a.close()
    assert b.take(0) is None
    b.close()


def test_racing_jobs_take_a_lease_once(tmp_path):
    """Eight jobs race for each of 10 fresh leases, then for each lease after its holder expired: one
    winner every time. (On a folder: moto's S3 checks If-None-Match and stores the object in two steps
    that concurrent requests interleave, where S3 itself and MinIO are atomic.)"""
    storage = open_storage(str(tmp_path))
    jobs = [Leases(storage, job(str(n)), ttl_s=1.0) for n in range(8)]  # heartbeats keep them alive
    for attempt in ("fresh", "expired"):
        winners: dict[int, list[str]] = {index: [] for index in range(10)}
        barrier = threading.Barrier(len(jobs))

        def race(leases: Leases, barrier=barrier, winners=winners) -> None:
            barrier.wait()
            for index in range(10):
                if leases.take(index) is None:
                    winners[index].append(leases.job.job)

        threads = [threading.Thread(target=race, args=(leases,)) for leases in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(len(won) == 1 for won in winners.values()), (attempt, winners)
        for leases in jobs:
            leases._stop.set()  # every holder dies, its leases expire
            leases.held.clear()
            leases.ttl_s = 60  # the next round's leases outlive the race without heartbeats
        time.sleep(1.1)


def test_queue_skips_what_others_committed_and_waits_for_what_they_render(tmp_path):
    from dppp.dataset.records import write_dataset_manifest

    storage = open_storage(str(tmp_path))
    write_dataset_manifest(storage, {"fingerprint": "f"})
    shards = [ShardPlan(i, (i,), 1, fingerprint="s") for i in range(3)]
    other = Leases(storage, job("o"), ttl_s=60)
    assert other.take(1) is None
    storage.put_bytes(committed_record(0, "s"), "shards/shard-000000.json")
    queue = LeasedQueue(shards, Leases(storage, job("q"), ttl_s=60), "f", poll_s=0.1)
    assert queue.take().index == 2  # 0 is committed for this config, 1 leased by the other job
    assert queue.by_others == [0] and list(queue.waiting) == [1] and queue.wait_s() > 0
    assert queue.take() is None and bool(queue)
    storage.put_bytes(committed_record(1, "another config"), "shards/shard-000001.json")
    other.close()
    time.sleep(0.1)
    assert queue.take().index == 1  # its record is another config's: rendered over
    queue.close()


def committed_record(index: int, fingerprint: str) -> bytes:
    from dppp.dataset.records import ShardRecord

    record = ShardRecord(
        index=index, tar=f"shards/shard-{index:06d}.tar", count=1, pids=[index], keys=["k"], bytes=0,
        sha256="0" * 64, fingerprint=fingerprint,
    )  # fmt: skip
    return record.to_json()


def test_a_job_stops_once_another_job_replaced_the_dataset(tmp_path):
    from dppp.dataset.records import write_dataset_manifest
    from dppp.pipeline.leases import DatasetReplaced

    storage = open_storage(str(tmp_path))
    write_dataset_manifest(storage, {"fingerprint": "f"})
    queue = LeasedQueue(
        [ShardPlan(i, (i,), 1, fingerprint="s") for i in range(2)], Leases(storage, job("q"), 60), "f", 1
    )
    assert queue.take().index == 0
    write_dataset_manifest(storage, {"fingerprint": "another config"})  # another job's --overwrite
    with pytest.raises(DatasetReplaced, match="another config"):
        queue.take()
    queue.close()
    assert live_leases(storage) == []  # it leaves no lease behind
