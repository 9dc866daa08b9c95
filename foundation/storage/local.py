"""Local storage: a folder on disk, written atomically (temp file + fsync + rename).

What the disk refuses (permission, a read-only or full file system, a path under a file) is a StorageError
naming the path and the problem, as one line: the user's to fix, never a traceback."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from dppp.foundation.errors import UserError
from dppp.foundation.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    check_key,
    check_prefix,
    redact_url,
)

# pyarrow.fs is imported inside arrow_filesystem: loading the config imports this module (through
# trainer/methods/checkpoint.py), and that must not pay ~100 ms for pyarrow.

# Local atomic writes go to a hidden sibling with this marker, then os.replace() onto the final name.
TEMP_MARKER = ".tmp-"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a local file whole or not at all: `write(out)` fills a hidden temp sibling, which is fsync'ed
    and renamed onto `path`; on any failure the temp file is removed and `path` keeps what it held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
    try:
        with open(temp, "wb") as out:
            write(out)
            out.flush()
            # A commit marker is written after this: the data must be durable before it.
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def content_version(data: bytes) -> str:
    """A local object's version for the conditional writes: its content's digest (leases carry a nonce,
    so two writes of one key never hold equal bytes)."""
    return hashlib.sha256(data).hexdigest()


# How the refusals a user meets most are worded; others in the words of strerror.
_PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
}


def os_error_message(exc: OSError, action: str, path: str | os.PathLike) -> str:
    """One line for an OSError the disk gave: 'cannot write /x/y: permission denied'."""
    path = Path(path)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(exc, (NotADirectoryError, FileExistsError)):
        blocker = next((p for p in path.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            return f"cannot {action} {path}: {blocker} is a file, not a folder"
    problem = _PROBLEMS.get(exc.errno) or (exc.strerror or "").lower()
    # pyarrow's OSErrors carry no errno, only a message ("... [errno 28] No space left on device")
    problem = problem or (str(exc) or type(exc).__name__).splitlines()[0]
    return f"cannot {action} {path}: {problem}"


@contextmanager
def os_errors(action: str, path: str | os.PathLike) -> Iterator[None]:
    """Turn what the disk refuses inside the block into a StorageError naming `path`."""
    try:
        yield
    except OSError as exc:
        raise StorageError(os_error_message(exc, action, path)) from None


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write a file the user named (an image, a plot), whole or not at all (atomic_write); what the disk
    refuses is a StorageError naming the file."""
    with os_errors("write", path):
        atomic_write(path, lambda out: out.write(data))


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()

    @property
    def local_root(self) -> Path:
        return self.root

    def arrow_filesystem(self):
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, local_path, key, *, progress=None):
        def copy(out: IO[bytes]) -> None:
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            if progress:
                progress(out.tell())

        path = self._path(key)
        with os_errors("write", path):
            atomic_write(path, copy)

    def put_bytes(self, data, key):
        path = self._path(key)
        with os_errors("write", path):
            atomic_write(path, lambda out: out.write(data))

    def check_writable(self) -> None:
        probe = self._path(f".dppp-write-check-{uuid.uuid4().hex[:12]}")
        with os_errors("write to", self.root):
            atomic_write(probe, lambda out: None)
            probe.unlink()

    def open_read(self, key):
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no such object: {self.url_for(key)}") from None
        except OSError as exc:
            raise StorageError(os_error_message(exc, "read", path)) from None

    def list(self, prefix=""):
        return sorted(self.walk(prefix))

    def walk(self, prefix=""):
        check_prefix(prefix)
        # Walk only the directory the prefix lies in, not the whole tree; os.scandir, not Path objects:
        # a dataset of 100k shards has 300k files here.
        base = os.path.join(self.root, prefix.rsplit("/", 1)[0]) if "/" in prefix else str(self.root)
        skip = len(str(self.root).rstrip(os.sep)) + 1
        pending = [base]
        while pending:
            folder = pending.pop()
            try:
                entries = os.scandir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise StorageError(os_error_message(exc, "list", folder)) from None
            with entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        continue
                    key = entry.path[skip:].replace(os.sep, "/")
                    if key.startswith(prefix):
                        try:
                            yield ObjectInfo(key, entry.stat().st_size)
                        except FileNotFoundError:  # removed while we walked
                            pass

    def stat(self, key):
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(os_error_message(exc, "read", path)) from None
        return ObjectInfo(key, st.st_size) if not os.path.isdir(path) else None

    def delete(self, key):
        path = self._path(key)
        with os_errors("delete", path):
            path.unlink(missing_ok=True)

    def discard_partial_writes(self, key):
        """atomic_write's hidden temp siblings of `key` (a writer killed before its rename left them)."""
        path = self._path(key)
        partial = list(path.parent.glob(f".{path.name}{TEMP_MARKER}*")) if path.parent.is_dir() else []
        for temp in partial:
            temp.unlink(missing_ok=True)
        return len(partial)

    # ---- conditional writes. A hard link is the atomic create-if-absent of POSIX (and of NFS, where
    # O_EXCL on the final name would expose a half-written object): the content is whole before the name
    # appears. A compare-and-swap holds a lock file beside the object (created with O_EXCL) while it
    # compares and replaces: the object itself never disappears, so a create cannot slip in between.

    def create_bytes(self, data, key):
        path = self._path(key)
        with os_errors("write", path):
            return self._create_bytes(data, path)

    def _create_bytes(self, data, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
        try:
            with open(temp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                return None
        finally:
            temp.unlink(missing_ok=True)
        return content_version(data)

    def read_versioned(self, key):
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return data, content_version(data)

    @contextmanager
    def _swap_lock(self, key: str) -> Iterator[None]:
        path = self._path(key)
        lock = path.with_name(f".{path.name}{TEMP_MARKER}lock")
        deadline = time.monotonic() + _SWAP_WAIT_S
        while True:
            try:
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                try:
                    if time.time() - lock.stat().st_mtime > _STALE_LOCK_S:  # its holder died mid-swap
                        lock.unlink(missing_ok=True)
                        continue
                except FileNotFoundError:
                    continue
                if time.monotonic() > deadline:
                    raise StorageError(f"{self.url_for(key)}: still locked by another process") from None
                time.sleep(0.002)
            except OSError as exc:  # a read-only or full disk: one line naming the lock
                raise StorageError(os_error_message(exc, "write", lock)) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def replace_bytes_if(self, data, key, version):
        with self._swap_lock(key):
            current = self.read_versioned(key)
            if current is None or current[1] != version:
                return None
            self.put_bytes(data, key)
        return content_version(data)

    def delete_if(self, key, version):
        with self._swap_lock(key):
            current = self.read_versioned(key)
            if current is None or current[1] != version:
                return False
            self.delete(key)
        return True


_SWAP_WAIT_S = 10.0  # a swap takes milliseconds; this long waiting for one means trouble
_STALE_LOCK_S = 30.0


def open_file_url(rest: str, url: str, config=None) -> LocalStorage:
    """file:///abs/path (or file://localhost/abs/path): the folder it names. `config` is unused: a folder
    needs no endpoint, retries or credentials."""
    if rest and not rest.startswith("/"):
        host = rest.split("/", 1)[0]
        if host != "localhost":
            raise UserError(
                f"file URL {redact_url(url)!r} names host {host.rpartition('@')[2]!r}: use file:///absolute/path"
            )
        rest = rest[len("localhost") :]
    return LocalStorage(unquote(rest) or "/")
