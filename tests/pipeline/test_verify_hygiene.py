"""`dppp shards verify`'s parallelism and processes: threads on an object store (never the slower process
per CPU), processes only where the auto choice or `--workers` asks for them, and every worker process
ends with verify when it is sent SIGTERM (one line, exit 143), never left running orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dppp.pipeline.verify as verify_module
from dppp.dataset.records import write_dataset_manifest
from dppp.dataset.shard_writer import write_shard
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.publish import publish_shard
from dppp.pipeline.verify import verify_dataset
from tests.ray_processes import is_running, title_of

ROOT = Path(__file__).resolve().parents[2]


def publish_dataset(url: str, tmp_path: Path, make_samples, shards: int):
    storage = open_storage(url)
    write_dataset_manifest(storage, {"plan": {"shards": shards}})
    for index in range(shards):
        path = tmp_path / f"{index}.tar"
        publish_shard(storage, index, path, write_shard(make_samples(1, 2, first_pid=index), path))
    return storage


def test_auto_verifies_an_object_store_on_threads_and_a_large_local_dataset_in_processes(
    moto_s3, tmp_path, make_samples, monkeypatch
):
    in_processes = []
    real = verify_module._verify_in_processes
    monkeypatch.setattr(
        verify_module,
        "_verify_in_processes",
        lambda *args: in_processes.append(args[0].url) or real(*args),
    )
    monkeypatch.setattr(verify_module, "PROCESSES_FROM_BYTES", 0)  # every dataset counts as large
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # and the machine has CPUs to spare
    s3 = publish_dataset(moto_s3.bucket() + "/ds", tmp_path, make_samples, 3)
    local = publish_dataset(str(tmp_path / "ds"), tmp_path, make_samples, 3)
    assert verify_dataset(s3.url, workers=0).verified == 3
    assert in_processes == []  # an object store: threads, however large
    assert verify_dataset(local.url, workers=0).verified == 3
    assert in_processes == [local.url]


def test_processes_on_an_object_store_verify_as_threads_do(moto_s3, tmp_path, make_samples):
    """`--workers 2` on S3: each process gets the storage once, verifies its batch on threads; the report is
    the one threads give, a damaged shard included."""
    storage = publish_dataset(moto_s3.bucket() + "/ds", tmp_path, make_samples, 5)
    data = bytearray(storage.read_bytes("shards/shard-000003.tar"))
    data[700] ^= 0x01
    storage.put_bytes(bytes(data), "shards/shard-000003.tar")
    threads, processes = verify_dataset(storage.url, workers=1), verify_dataset(storage.url, workers=2)
    assert [(c.name, c.status, c.problems) for c in processes.checks] == [
        (c.name, c.status, c.problems) for c in threads.checks
    ]
    assert [(c.name, c.status) for c in processes.checks] == [("shards/shard-000003.tar", "corrupted")]
    assert (processes.verified, processes.samples, processes.bytes) == (
        threads.verified,
        threads.samples,
        threads.bytes,
    )


def children_of(pid: int) -> set[int]:
    """The children of process `pid`, as its own /proc entry lists them."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def worker_processes_of(pid: int) -> set[int]:
    """The multiprocessing workers among `pid`'s children (not its resource tracker)."""
    return {child for child in children_of(pid) if b"spawn_main" in title_of(child)}


@pytest.mark.slow
def test_sigterm_ends_verify_and_its_worker_processes(tmp_path, make_samples):
    """Verify unwinds, ends its workers, says so in one line, exit 143 (it used to die at once, its two
    workers left running, orphaned, holding its output open)."""
    storage = publish_dataset(str(tmp_path / "ds"), tmp_path, make_samples, 20)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # files, not pipes: an orphaned worker would hold a pipe open and keep a reader waiting
    out, err = (tmp_path / "out.txt").open("w+"), (tmp_path / "err.txt").open("w+")
    verify = subprocess.Popen(
        [sys.executable, "-m", "dppp", "shards", "verify", storage.url, "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=err,
        text=True,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(workers := worker_processes_of(verify.pid)) < 2:  # the two worker processes are up
            assert verify.poll() is None and time.monotonic() < deadline, "verify ended before its workers"
            time.sleep(0.005)
        workers |= children_of(verify.pid)  # its resource tracker too, if it has one
        verify.send_signal(signal.SIGTERM)
        verify.wait(timeout=60)
        deadline = time.monotonic() + 10
        while (left := [pid for pid in workers if is_running(pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if verify.poll() is None:
            verify.kill()
            verify.wait()
        for pid in workers:  # what verify started and left behind (only ever on a failure here)
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"verify's worker processes outlived it: {left}"
    assert verify.returncode == 143
    out.seek(0), err.seek(0)
    printed, errors = out.read(), err.read()
    last = errors.splitlines()[-1]  # one line, said by foundation/graceful_stop as generate says it
    assert (
        last.startswith("stopped: ")
        and "committed shards verified" in last
        and last.endswith("rerun to verify")
    )
    assert "Traceback" not in errors and "OK" not in printed


_POOL_BESIDE = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.verify import _start_worker

spawn = multiprocessing.get_context("spawn")
pool = ProcessPoolExecutor(1, mp_context=spawn, initializer=_start_worker, initargs=(os.getpid(), open_storage(sys.argv[1])))
print(pool.submit(os.getpid).result(), flush=True)  # a task ran: the worker's start-up is done
time.sleep(600)
"""


def test_a_verify_worker_ends_when_its_parent_is_sigkilled(tmp_path):
    """Nothing of a SIGKILLed verify runs, so its pool cannot end its workers: each worker has asked Linux
    for SIGTERM at its parent's death (a started worker used to run on, orphaned)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", _POOL_BESIDE, str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = 0
    try:
        worker = int(parent.stdout.readline())
        assert is_running(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while is_running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_running(worker), "the worker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        if worker and is_running(worker):  # what the parent started and left behind (only on a failure)
            os.kill(worker, signal.SIGKILL)
