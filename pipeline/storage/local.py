"""Local storage: a folder on disk, written atomically (temp file + fsync + rename)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pipeline.storage.base import ObjectInfo, ObjectNotFound, Storage, check_key, check_prefix

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

        atomic_write(self._path(key), copy)

    def put_bytes(self, data, key):
        atomic_write(self._path(key), lambda out: out.write(data))

    def open_read(self, key):
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no such object: {self.url_for(key)}") from None

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
            try:
                entries = os.scandir(pending.pop())
            except (FileNotFoundError, NotADirectoryError):
                continue
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
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size) if not os.path.isdir(self._path(key)) else None

    def delete(self, key):
        self._path(key).unlink(missing_ok=True)

    def discard_partial_writes(self, key):
        """atomic_write's hidden temp siblings of `key` (a writer killed before its rename left them)."""
        path = self._path(key)
        partial = list(path.parent.glob(f".{path.name}{TEMP_MARKER}*")) if path.parent.is_dir() else []
        for temp in partial:
            temp.unlink(missing_ok=True)
        return len(partial)
