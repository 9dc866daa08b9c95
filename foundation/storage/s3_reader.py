"""The streaming S3 reader: a read-ahead thread, and resumable ranged GETs pinned to the object's ETag."""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from dppp.foundation.storage.base import StorageUnavailable
from dppp.foundation.storage.s3_errors import is_transient, scrub

# GET the object from byte `start` on, pinned to `etag` when given: the storage's request, with its retries.
# A callable, not the storage, so this module needs nothing of s3.py (which builds readers).
RangedGet = Callable[[int, "str | None"], dict[str, Any]]


class _Fetcher:
    """The network side of an S3 read, run by the read-ahead thread. It holds no reference to the reader,
    so an abandoned reader is garbage-collected, and its close() stops this thread."""

    CHUNK = 1 << 20

    def __init__(self, name: str, get: RangedGet, retry_budget_s: float, response, prefetch: int):
        self.get = get
        self.retry_budget_s = retry_budget_s
        self.name = name
        self.etag = response.get("ETag")
        self.body = response["Body"]
        self.fetched = 0  # bytes pulled from the network
        self.queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()

    def read_chunk(self) -> bytes:
        deadline = time.monotonic() + self.retry_budget_s
        while True:
            try:
                data = self.body.read(self.CHUNK)
                self.fetched += len(data)
                return data
            except Exception as exc:
                if self.stop.is_set() or not is_transient(exc) or time.monotonic() > deadline:
                    raise StorageUnavailable(
                        f"cannot read {self.name} at byte {self.fetched}: {scrub(f'{type(exc).__name__}: {exc}')}"
                    ) from None
                self.close_body()
                # Resume where the connection dropped, and only from the same version of the object.
                self.body = self.get(self.fetched, self.etag)["Body"]

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.read_chunk()
                self.put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading thread, which raises it
            self.put(exc)

    def put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close_body(self) -> None:
        try:
            self.body.close()
        except Exception:
            pass


class S3Reader(io.RawIOBase):
    """A streaming GET, read ahead by a background thread so the network overlaps the caller's parsing.

    At most `prefetch` chunks of 1 MiB wait in memory. A dropped connection resumes with a Range request
    pinned to the ETag (never splicing two versions of an object), within the retry budget."""

    def __init__(self, name: str, get: RangedGet, retry_budget_s: float, prefetch: int = 4):
        self.name = name  # what error messages call this stream (the object's URL)
        self.pos = 0  # bytes handed to the caller
        response = get(0, None)  # synchronous: a missing object fails at open
        self.size = response.get("ContentLength")
        self._fetcher = _Fetcher(name, get, retry_budget_s, response, prefetch)
        self._current = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._fetcher.run, name=f"s3-read {name}", daemon=True)
        self._thread.start()

    @property
    def _fetched(self) -> int:
        return self._fetcher.fetched

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._current:
            if self._eof:
                return 0
            item = self._fetcher.queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
                return 0
            self._current = memoryview(item)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._fetcher.stop.set()
            self._fetcher.close_body()  # unblocks a read in flight in the read-ahead thread
            self._thread.join(timeout=5)
        super().close()
