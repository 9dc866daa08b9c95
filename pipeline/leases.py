"""Shard leases: how any number of `dppp generate` jobs on one output split its plan.

Before a job renders a shard it creates `shards/shard-NNNNNN.lease` beside it: a small JSON object naming
the job (id, host, pid, start time) and an expiry. Creating it is a conditional write that only one job
can win (S3: PUT If-None-Match; a folder: a hard link, foundation/storage/local.py). While the shard
renders, a heartbeat thread renews the job's leases (a compare-and-swap on the version it wrote); at
commit the lease is removed. A job that finds a live lease of another job leaves that shard and polls it
later: by then it is committed (counted as done by another job) or its lease has expired (its job died)
and is taken over. The commit record stays the only truth: a lease only spares the GPU a second render
(which would write the same bytes), so after taking a lease the job reads the shard's record and skips
a shard already committed for this very config.

Expiry is judged on the wall clock of the reader: the nodes' clocks must agree to well within
`generate.lease_ttl_s` (NTP does).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import ValidationError

from dppp.dataset.format import lease_name, parse_lease_key
from dppp.dataset.records import read_dataset_manifest, read_record
from dppp.foundation.errors import DataError, ReportedError, SettingError
from dppp.foundation.schema import StrictModel
from dppp.foundation.storage.base import Storage, StorageError, StorageUnavailable
from dppp.pipeline.plan import ShardPlan

LEASE_FORMAT = "dppp-lease/1"


class Lease(StrictModel):
    """What one lease object says: which job holds the shard, until when."""

    format: str = LEASE_FORMAT
    shard: int
    job: str  # a random id per job run
    host: str
    pid: int
    started: str  # when the job started, ISO 8601 UTC
    expires: float  # unix time
    nonce: str  # unique per write: tells this job's own write from another's

    def live(self, now: float | None = None) -> bool:
        return self.expires > (time.time() if now is None else now)

    def holder(self) -> str:
        return f"job {self.job[:8]} on host {self.host}, pid {self.pid}, started {self.started}"

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), sort_keys=True).encode()


def parse_lease(data: bytes) -> Lease | None:
    """A lease object's content; None when it is not one (a torn or foreign object counts as expired)."""
    try:
        return Lease.model_validate_json(data)
    except ValidationError:
        return None


@dataclass(frozen=True)
class JobIdentity:
    """Who a lease names: this process, for the length of one `dppp generate` run."""

    job: str
    host: str
    pid: int
    started: str

    @classmethod
    def current(cls) -> JobIdentity:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), started)


def live_leases(storage: Storage, *, other_than: str | None = None) -> list[Lease]:
    """The live leases on the output, of jobs other than `other_than` (a listing of shards/ and a read
    of each lease object found)."""
    now = time.time()
    found = []
    for obj in storage.iter_list("shards/"):
        if parse_lease_key(obj.key) is None:
            continue
        current = storage.read_versioned(obj.key)
        lease = parse_lease(current[0]) if current else None
        if lease is not None and lease.live(now) and lease.job != other_than:
            found.append(lease)
    return found


def refuse_while_leased(storage: Storage, job: JobIdentity, setting: str) -> None:
    """One writer for destructive changes: refuse while another job holds live leases on the output."""
    others = live_leases(storage, other_than=job.job)
    if others:
        jobs = {lease.job: lease for lease in others}
        shown = "; ".join(lease.holder() for lease in list(jobs.values())[:3])
        raise SettingError(
            setting,
            f"another dppp generate job is rendering into {storage.url} ({shown}: {len(others)} live "
            "shard lease(s)); refusing to change the dataset under it: wait for it to finish or stop it",
        )


class DatasetReplaced(ReportedError):
    """dataset.json changed to another config while this job ran (another job's --overwrite or --extend):
    this job stops, and shards it committed for the old config are re-rendered by the other job."""


class Leases:
    """The leases this job holds, with the heartbeat thread that renews them every ttl/3."""

    def __init__(self, storage: Storage, job: JobIdentity, ttl_s: float):
        self.storage, self.job, self.ttl_s = storage, job, ttl_s
        self.held: dict[int, str] = {}  # shard index -> version of our lease object
        self.taken_over: list[Lease] = []  # expired leases of other jobs this job took
        self.lost: list[int] = []  # leases another job took from us (we stalled past the expiry)
        self.errors: list[str] = []  # renewals or releases that failed on storage
        self.unreachable = False  # the storage failed a call for a whole retry budget: no more calls
        self._lock = threading.Lock()  # one storage call on our leases at a time: renew vs release
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lease(self, index: int) -> Lease:
        job = self.job
        return Lease(
            shard=index,
            job=job.job,
            host=job.host,
            pid=job.pid,
            started=job.started,
            expires=time.time() + self.ttl_s,
            nonce=uuid.uuid4().hex,
        )

    def take(self, index: int) -> Lease | None:
        """Take shard `index`'s lease: None when this job now holds it, else the live lease in the way."""
        key = lease_name(index)
        if index in self.held:
            return None
        holder: Lease | None = None
        for _ in range(3):  # a lease released or taken between our calls: look again
            mine = self._lease(index)
            try:
                version = self.storage.create_bytes(mine.to_json(), key)
            except StorageUnavailable:
                raise  # the output is down: the driver's circuit breaker stops the run
            except StorageError as exc:
                # A lease only saves another job's GPU time (the record is the truth): an output that
                # refuses it (read-only, full) gets the shard rendered without one; the shard's own writes
                # then fail or succeed on their own, and the summary says so.
                self.errors.append(f"shard {index} rendered without a lease: {exc}")
                return None
            if version is None:
                current = self.storage.read_versioned(key)
                if current is None:
                    continue
                holder = parse_lease(current[0])
                if holder is not None and holder.nonce == mine.nonce:
                    version = current[1]  # a retried create of ours had landed
                elif holder is not None and holder.live():
                    return holder
                else:
                    version = self.storage.replace_bytes_if(mine.to_json(), key, current[1])
                    if version is None:
                        continue
                    if holder is not None:
                        self.taken_over.append(holder)
            if not self._reads_back(key, mine):
                continue
            with self._lock:
                self.held[index] = version
            self._start_heartbeat()
            return None
        # Lost the race three times in a row: others are at this shard; leave it to be polled again.
        return holder or Lease(shard=index, job="?", host="?", pid=0, started="?", expires=0, nonce="?")

    def _reads_back(self, key: str, mine: Lease) -> bool:
        """Whether the lease object holds what this job just wrote: a store that ignored the condition
        (an S3 endpoint without conditional writes) let a later writer win, and this job must yield."""
        current = self.storage.read_versioned(key)
        return (
            current is not None
            and (lease := parse_lease(current[0])) is not None
            and lease.nonce == mine.nonce
        )

    def release(self, index: int) -> None:
        with self._lock:
            version = self.held.pop(index, None)
            if version is None:
                return
            if self.unreachable:  # each call would spend a whole retry budget: the lease expires on its own
                return
            try:
                self.storage.delete_if(lease_name(index), version)
            except StorageError as exc:  # it expires on its own
                self.errors.append(f"releasing shard {index}'s lease: {exc}")
                self.unreachable = isinstance(exc, StorageUnavailable)

    def renew(self) -> None:
        for index in list(self.held):
            with self._lock:
                version = self.held.get(index)
                if version is None:
                    continue
                try:
                    renewed = self.storage.replace_bytes_if(
                        self._lease(index).to_json(), lease_name(index), version
                    )
                except StorageError as exc:  # the next beat tries again; the expiry leaves room for two
                    self.errors.append(f"renewing shard {index}'s lease: {exc}")
                    continue
                if renewed is None:
                    del self.held[index]
                    self.lost.append(index)
                else:
                    self.held[index] = renewed

    def _start_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="dppp-lease-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self.renew()

    def close(self) -> None:
        """Stop renewing and release every lease still held (a job that stops leaves none behind)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for index in list(self.held):
            self.release(index)


class ShardQueue:
    """The shards a job still has to render, handed to the driver one at a time (no leases: one job)."""

    def __init__(self, shards: list[ShardPlan]):
        self.ready = deque(shards)
        self.by_others: list[int] = []  # shards found committed by another job

    def __bool__(self) -> bool:
        return bool(self.ready)

    def __len__(self) -> int:
        return len(self.ready)

    def take(self) -> ShardPlan | None:
        return self.ready.popleft() if self.ready else None

    def append(self, shard: ShardPlan) -> None:
        """A shard to try again (its lease, if any, stays held)."""
        self.ready.append(shard)

    def done(self, shard: ShardPlan) -> None:
        """The shard is committed (or failed for good): this job lets it go."""

    def wait_s(self) -> float | None:
        """How soon the driver should ask again although nothing finished; None: only when something does."""
        return None

    def close(self) -> None:
        pass


@dataclass
class LeasedQueue(ShardQueue):
    """A ShardQueue shared with other jobs: each shard is handed out only once this job holds its lease
    and no job has committed it for this config; shards another job is rendering wait and are polled."""

    shards: list[ShardPlan]
    leases: Leases
    fingerprint: str  # dataset.json's fingerprint of this job's config
    poll_s: float
    waiting: dict[int, ShardPlan] = field(default_factory=dict)
    _next_poll: float = 0.0

    def __post_init__(self) -> None:
        super().__init__(self.shards)

    def __bool__(self) -> bool:
        return bool(self.ready or self.waiting)

    def __len__(self) -> int:
        return len(self.ready) + len(self.waiting)

    def take(self) -> ShardPlan | None:
        if self.waiting and time.monotonic() >= self._next_poll:
            self.ready.extend(self.waiting.values())
            self.waiting.clear()
        while self.ready:
            shard = self.ready.popleft()
            if self.leases.take(shard.index) is not None:
                self.waiting[shard.index] = shard
                self._next_poll = time.monotonic() + self.poll_s
                continue
            self._check_dataset()
            if self._committed(shard):
                self.leases.release(shard.index)
                self.by_others.append(shard.index)
                continue
            return shard
        return None

    def done(self, shard: ShardPlan) -> None:
        self.leases.release(shard.index)

    def wait_s(self) -> float | None:
        return max(0.0, self._next_poll - time.monotonic()) if self.waiting else None

    def close(self) -> None:
        self.leases.close()

    def _check_dataset(self) -> None:
        storage = self.leases.storage
        if read_dataset_manifest(storage).get("fingerprint") != self.fingerprint:
            raise DatasetReplaced(
                f"{storage.url}: dataset.json now holds another config (another job replaced or grew the "
                "dataset while this one ran); this job stops, and the other job renders the dataset"
            )

    def _committed(self, shard: ShardPlan) -> bool:
        """Whether the shard is committed for this job's config: its record names the same pids and,
        when it has one, the same shard fingerprint (a record of another config is rendered over)."""
        try:
            record = read_record(self.leases.storage, shard.index)
        except DataError:  # a malformed record: rendering replaces it
            return False
        if record is None or tuple(record.pids) != shard.pids:
            return False
        return record.fingerprint is None or record.fingerprint == shard.fingerprint
