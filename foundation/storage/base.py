"""The storage interface: a dataset root on some object store, its errors, keys and URL redaction."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dppp.foundation.errors import DataError

if TYPE_CHECKING:
    import pyarrow.fs


class StorageError(DataError):
    """A storage operation failed for a reason the user must fix (missing bucket, access denied...)."""


class ObjectNotFound(StorageError):
    """The key does not exist."""


class StorageUnavailable(StorageError):
    """Transient failures outlasted the retry budget (endpoint down, throttled, 5xx)."""


@dataclass(frozen=True, order=True)
class ObjectInfo:
    key: str
    size: int


# scheme://user:password@ -- also when the password holds a '/' (AWS secret keys may), which RFC 3986
# forbids there but people write; not a host:port followed by a path with an '@' in it.
_URL_CREDENTIALS = re.compile(
    r"([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@\s]*|[^/@\s:]*:(?!\d{1,5}(?:[/\s'\"]|$))[^@\s'\"]*)@"
)


def redact_url(text: str) -> str:
    """Drop the user:password@ part of every URL in `text` (a URL, a NAME:URL spec, a message), so an
    endpoint or a data source can be shown in messages and records."""
    return _URL_CREDENTIALS.sub(r"\1", text)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str) -> str:
    """A storage key: relative, '/'-separated, no empty, '.' or '..' parts, no control characters."""
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    # a regex, not a generator per character: every read and write of 100k-shard datasets checks keys
    if key.startswith("/") or "\\" in key or _UNPRINTABLE.search(key):
        raise ValueError(f"invalid storage key {key!r}: must be relative, '/'-separated, printable")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}: empty, '.' or '..' path component")
    return key


def check_prefix(prefix: str) -> str:
    if prefix and any(part in (".", "..") for part in prefix.split("/")):
        raise ValueError(f"invalid storage prefix {prefix!r}")
    return prefix


class Storage(ABC):
    """A dataset root on some object store. Keys are relative to `url`."""

    url: str

    @abstractmethod
    def put_file(
        self, local_path: str | os.PathLike, key: str, *, progress: Callable[[int], None] | None = None
    ) -> None:
        """Publish a local file atomically: readers see the old object or the whole new one, never a part.
        `progress(n)` is called with the number of bytes sent since the last call (negative when a part is
        resent after a failure: its count goes back first), one call at a time."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> None:
        """Publish bytes atomically."""

    @abstractmethod
    def open_read(self, key: str) -> IO[bytes]:
        """A streaming binary reader (a context manager); raises ObjectNotFound."""

    # Whether a listing that starts part-way (`iter_list(after=...)`) costs only its part: then listing a
    # large dataset in key ranges on several threads pays (S3: one round trip per 1,000 keys).
    ranged_listing = False

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    def iter_list(self, prefix: str = "", *, after: str | None = None) -> Iterator[ObjectInfo]:
        """The objects whose key starts with `prefix` and sorts after `after`, in key order, as they come."""
        return (obj for obj in self.list(prefix) if after is None or obj.key > after)

    def walk(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The objects whose key starts with `prefix`, in no particular order, as they come: for a caller
        that needs no order, without the whole listing held (and sorted) at once."""
        return self.iter_list(prefix)

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size of one object, or None when it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def discard_partial_writes(self, key: str) -> int:
        """Remove what a writer of `key` killed mid-write left behind; returns how many objects. Nothing on
        an object store: an interrupted upload never becomes an object."""
        return 0

    @property
    def local_root(self) -> Path | None:
        """The folder holding the objects as plain files on this machine; None for an object store."""
        return None

    @abstractmethod
    def check_writable(self) -> None:
        """Raise a StorageError naming the root and the problem unless an object can be written under it (a
        missing bucket, no permission, a read-only or full disk, a path under a file): checked before a
        long run starts. Leaves nothing behind."""

    @abstractmethod
    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """A pyarrow filesystem that reaches this storage, and the root's path on it (Ray Train's storage)."""

    def worker_env(self) -> dict[str, str]:
        """The settings, taken from this process's environment, that a process on another node needs to
        reach this storage where this one does (endpoint, region); none for local storage. Never a
        credential: this travels in Ray's runtime_env, which Ray logs and shows."""
        return {}

    # ---- conditional writes: the compare-and-swap that leases (pipeline/leases.py) are built on. A
    # version is an opaque tag of one written content (S3: its ETag; a folder: its sha256).

    def create_bytes(self, data: bytes, key: str) -> str | None:
        """Write `key` only where no object holds it, atomically; the version written, None if it existed."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and version; None when it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def replace_bytes_if(self, data: bytes, key: str, version: str) -> str | None:
        """Replace `key` only while it still holds `version`; the new version, None if it changed or went."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def delete_if(self, key: str, version: str) -> bool:
        """Remove `key` only while it still holds `version`; whether this call removed it."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as stream:
            return stream.read()

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def url_for(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{check_key(key)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
