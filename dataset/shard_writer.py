"""The shard writer: samples streamed into one deterministic tar, hashed and counted on the way out.

Samples go out in key order, members in name order, every entry with the fixed mtime, owner and mode of
dataset/format.py, so the same samples give the same bytes, whoever writes them and whenever. The
writer never reads the tar back: `ShardInfo` (count, pids, keys, bytes, sha256) is what the commit record
states.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from dppp.dataset.format import FIXED_MTIME, IMAGE_EXTS
from dppp.dataset.keys import KEY_RE
from dppp.foundation.redaction import strip_secrets
from dppp.foundation.storage.local import atomic_write


@dataclass(frozen=True)
class Sample:
    """One rendered image with everything the shard stores about it."""

    key: str  # dataset.keys.sample_key(pid, view), e.g. 'p000012_v003'
    image_bytes: bytes  # already encoded (pipeline/postprocess.py)
    image_ext: str  # 'jpg', 'png' or 'webp'
    metadata: dict[str, Any]  # the json member: pid, view, camid, attributes, prompt, seeds, renderer...
    prompt: str
    pid: int

    def check(self) -> None:
        if not isinstance(self.key, str) or not KEY_RE.fullmatch(self.key):
            raise ValueError(f"sample key {self.key!r} must match {KEY_RE.pattern} (dot-free)")
        if self.image_ext not in IMAGE_EXTS:
            raise ValueError(f"sample {self.key}: image_ext {self.image_ext!r} is not one of {IMAGE_EXTS}")
        if not isinstance(self.pid, int) or isinstance(self.pid, bool) or self.pid < 0:
            raise ValueError(f"sample {self.key}: pid must be a non-negative int, got {self.pid!r}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"sample {self.key}: metadata must be a dict")
        for name, expected in (("key", self.key), ("pid", self.pid)):
            if name in self.metadata and self.metadata[name] != expected:
                raise ValueError(
                    f"sample {self.key}: metadata {name}={self.metadata[name]!r} != {expected!r}"
                )

    def members(self) -> list[tuple[str, bytes]]:
        """(name, bytes) in name order. The json is canonical (sorted keys, no spaces), and secret-free."""
        metadata = json.dumps(
            strip_secrets(self.metadata),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        )
        members = {
            "cls": str(self.pid).encode(),
            self.image_ext: bytes(self.image_bytes),
            "json": metadata.encode("utf-8"),
            "txt": self.prompt.encode("utf-8"),
        }
        return [(f"{self.key}.{ext}", members[ext]) for ext in sorted(members)]


@dataclass(frozen=True)
class ShardInfo:
    """What a finished tar holds: the figures its commit record states."""

    count: int
    pids: tuple[int, ...]  # sorted, unique
    keys: tuple[str, ...]  # sorted
    bytes: int
    sha256: str
    image_format: str | None


class _HashingWriter:
    """Counts and hashes every byte on its way to the file, so the writer never reads the tar back."""

    def __init__(self, out: IO[bytes]):
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size


_PADDING = [b"\0" * n for n in range(tarfile.BLOCKSIZE)]  # data is padded with NULs to a whole block


class ShardWriter:
    """Stream samples into one deterministic tar. Samples must come in strictly increasing key order.

    with ShardWriter(open(path, "wb")) as writer:
        for sample in samples: writer.write(sample)
    info = writer.info
    """

    def __init__(self, out: IO[bytes]):
        self._sink = _HashingWriter(out)
        # Plain "w" on a write-only sink: tarfile only appends (it asks tell() once); USTAR keeps the headers
        # free of PAX timestamps.
        self._tar = tarfile.open(fileobj=self._sink, mode="w", format=tarfile.USTAR_FORMAT)
        self._keys: list[str] = []
        self._pids: set[int] = set()
        self._formats: set[str] = set()
        self.info: ShardInfo | None = None

    def write(self, sample: Sample) -> None:
        sample.check()
        if self._keys and sample.key <= self._keys[-1]:
            raise ValueError(
                f"samples must be written in increasing key order: {sample.key} after {self._keys[-1]}"
            )
        # The bytes TarFile.addfile would write (header from tarfile's own TarInfo.tobuf, the data, NULs to a
        # whole block), but a sample's four members go out as one write: addfile's per-member copy.copy of the
        # TarInfo, BytesIO wrapper and chunked copy loop were a third of the writer's time. TarFile still
        # writes the end of the archive, so its offset must count what went out here.
        # test_writer_output_is_what_tarfile_addfile_writes holds the bytes to addfile's.
        tar = self._tar
        parts = []
        for name, data in sample.members():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            entry.mtime = FIXED_MTIME
            entry.mode = 0o644
            entry.uid = entry.gid = 0
            entry.uname = entry.gname = ""
            parts += (
                entry.tobuf(tarfile.USTAR_FORMAT, tar.encoding, tar.errors),
                data,
                _PADDING[-len(data) % tarfile.BLOCKSIZE],
            )
        blob = b"".join(parts)
        self._sink.write(blob)
        tar.offset += len(blob)
        self._keys.append(sample.key)
        self._pids.add(sample.pid)
        self._formats.add(sample.image_ext)

    def close(self) -> ShardInfo:
        if self.info is None:
            self._tar.close()
            formats = sorted(self._formats)
            self.info = ShardInfo(
                count=len(self._keys),
                pids=tuple(sorted(self._pids)),
                keys=tuple(self._keys),
                bytes=self._sink.size,
                sha256=self._sink.hash.hexdigest(),
                image_format=formats[0] if len(formats) == 1 else ",".join(formats) or None,
            )
        return self.info

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def write_shard(samples: Iterable[Sample], path: str | os.PathLike) -> ShardInfo:
    """Write `samples` (any order; sorted here by key) as a tar at the local `path`, atomically."""
    ordered = sorted(samples, key=lambda s: s.key)
    keys = [s.key for s in ordered]
    if len(set(keys)) != len(keys):
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate sample keys: {duplicates[:5]}")
    writer = None

    def write(out: IO[bytes]) -> None:
        nonlocal writer
        with ShardWriter(out) as writer:
            for sample in ordered:
                writer.write(sample)

    atomic_write(path, write)
    return writer.info
