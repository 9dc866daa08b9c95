"""The shard format: deterministic WebDataset tars of whole identities, and a safe streaming reader.

A shard is a plain tar. Each sample is four contiguous members named `<key>.<ext>`:

    p000012_v003.cls    the pid as decimal text
    p000012_v003.jpg    the image (or .png / .webp)
    p000012_v003.json   the full metadata (sorted keys, UTF-8)
    p000012_v003.txt    the prompt

Samples are in key order and members in name order, so the whole tar is in sorted name order. Every entry
has a fixed mtime, uid/gid 0, empty user/group names and mode 0644: the same samples give the same bytes,
whoever writes them and whenever. Stock `webdataset.WebDataset`, `ray.data.read_webdataset` and `tarfile`
read these shards as they are.

The reader decodes only the allow-listed members (images, json, txt, cls). Anything else (a pickle, .pth,
.npy...) is never decoded: it is reported and skipped. Member names with '/', '..', an absolute path or a
control character are rejected, since a Re-ID shard never needs them and extracting them would be unsafe.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from foundation.errors import DataError
from pipeline.redaction import strip_secrets
from pipeline.storage.local import atomic_write

log = logging.getLogger("dppp.shards")

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: a constant, so a rerun gives byte-identical tars
IMAGE_EXTS = ("jpg", "png", "webp")  # what the writer emits (postprocess.OutputConfig.format)
READ_IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp"})
ALLOWED_EXTS = READ_IMAGE_EXTS | {"json", "txt", "cls"}
SAMPLE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # dot-free: webdataset splits key and ext at the first dot
SHARD_KEY_RE = re.compile(r"^shards/shard-(\d{6,})\.(tar|json|parquet)$")


def shard_name(index: int) -> str:
    """The tar's key under the dataset root: shard_name(12) == 'shards/shard-000012.tar'."""
    return f"shards/shard-{index:06d}.tar"


def record_name(index: int) -> str:
    """The commit record's key: record_name(12) == 'shards/shard-000012.json'."""
    return f"shards/shard-{index:06d}.json"


def fragment_name(index: int) -> str:
    """The key of the shard's index fragment (its index rows): fragment_name(12) == 'shards/shard-000012.parquet'."""
    return f"shards/shard-{index:06d}.parquet"


def parse_shard_key(key: str) -> tuple[int, str] | None:
    """('shards/shard-000012.tar' -> (12, 'tar')); 'json' for a record, 'parquet' for a fragment; None for
    any other key."""
    match = SHARD_KEY_RE.match(key)
    return (int(match.group(1)), match.group(2)) if match else None


@dataclass(frozen=True)
class Sample:
    """One rendered image with everything the shard stores about it."""

    key: str  # prompts.spec.sample_key(pid, view), e.g. 'p000012_v003'
    image_bytes: bytes  # already encoded (pipeline/postprocess.py)
    image_ext: str  # 'jpg', 'png' or 'webp'
    metadata: dict[str, Any]  # the json member: pid, view, camid, attributes, prompt, seeds, renderer...
    prompt: str
    pid: int

    def check(self) -> None:
        if not isinstance(self.key, str) or not SAMPLE_KEY_RE.fullmatch(self.key):
            raise ValueError(f"sample key {self.key!r} must match {SAMPLE_KEY_RE.pattern} (dot-free)")
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


# ------------------------------------------------------------------------------------------- reading


class UnsafeShardError(DataError):
    """A member name that a Re-ID shard never has and that would be unsafe to extract."""


@dataclass
class Member:
    """One tar entry as the reader saw it. `data` is None when the member was not read."""

    name: str
    key: str
    ext: str
    size: int
    data: bytes | None = None
    skipped: str | None = None  # why it was not decoded (not allow-listed, not a regular file...)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+")


def check_member_name(name: str, source: str) -> tuple[str, str]:
    """Split a member name into (key, ext), rejecting names that could escape or confuse a reader."""
    if _PLAIN_NAME.fullmatch(name):  # the fast path: every member our writer makes
        key, _, ext = name.partition(".")
        return key, ext.lower()
    problem = None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains a control character"
    elif name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
        problem = "is an absolute path"
    elif ".." in name.replace("\\", "/").split("/") or "/.." in name or name.startswith(".."):
        problem = "contains '..'"
    elif "/" in name or "\\" in name:
        problem = "contains '/' (shard keys are flat)"
    elif not name:
        problem = "is empty"
    if problem:
        raise UnsafeShardError(f"{source}: member {name!r} {problem}: rejected")
    key, dot, ext = name.partition(".")
    return key, ext.lower() if dot else ""


class _DamagedTar(Exception):
    pass


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile quietly ends an archive at a truncated, empty or invalid header after the first one; only a
    zero block (the end-of-archive marker) may end a shard, anything else is damage and must be said."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            raise
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError):
            raise _DamagedTar(f"archive ends at byte {tar.offset} without an end-of-archive marker") from None
        except tarfile.InvalidHeaderError as exc:
            raise _DamagedTar(f"invalid header at byte {tar.offset}: {exc}") from None


class ChunkedReader:
    """A forward-only byte stream (a file, an S3 body) read in large chunks and made seekable within the
    chunk in hand, so that tarfile can walk it in random-access mode ("r:"): headers and small members are
    sliced out of memory, and data nobody asked for is stepped over without a Python call per piece.
    tarfile's stream mode ("r|") instead re-buffers every read through Python, copying its whole buffer's
    remainder each time: that, not the tar format, was most of the reader's cost.

    Every byte is pulled from the source exactly once and in order, and handed to `on_chunk` (verify hashes
    there: one hash call per chunk, no second read). Seeking back before the chunk in hand is not possible;
    tarfile never does it for the regular members of a shard."""

    def __init__(
        self, stream: IO[bytes], *, chunk_size: int = 1 << 20, on_chunk: Callable[[bytes], None] | None = None
    ):
        self._stream = stream
        self._chunk_size = chunk_size
        self._on_chunk = on_chunk
        self._buf = b""
        self._at = 0  # read position inside _buf
        self._base = 0  # stream offset of _buf[0]
        self.pulled = 0  # bytes taken from the source so far
        self.name = getattr(stream, "name", None)

    def _pull(self, n: int) -> bytes:
        data = self._stream.read(max(n, self._chunk_size))
        if data:
            self.pulled += len(data)
            if self._on_chunk:
                self._on_chunk(data)
        return data

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self._buf[self._at :]]
            while chunk := self._pull(self._chunk_size):
                parts.append(chunk)
            data = b"".join(parts)
        else:
            end = self._at + n
            if end > len(self._buf):  # top up: keep the unread tail, add chunks until n bytes or the end
                parts = [self._buf[self._at :]]
                have = len(parts[0])
                while have < n and (chunk := self._pull(n - have)):
                    parts.append(chunk)
                    have += len(chunk)
                self._base += self._at
                self._buf, self._at, end = b"".join(parts), 0, n
            data = self._buf[self._at : end]
        self._at += len(data)
        if self._at >= len(self._buf):
            self._base += len(self._buf)
            self._buf, self._at = b"", 0
        return data

    def tell(self) -> int:
        return self._base + self._at

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.tell()
        elif whence != 0:
            raise io.UnsupportedOperation("ChunkedReader seeks from the start or the current position only")
        if offset < self._base:
            raise io.UnsupportedOperation(f"cannot seek back to {offset}: the stream is past {self._base}")
        if offset <= self._base + len(self._buf):
            self._at = offset - self._base
            return offset
        skip = offset - self._base - len(self._buf)  # beyond what is in hand: pull it through, keep none
        self._base += len(self._buf)
        self._buf, self._at = b"", 0
        while skip > 0:
            chunk = self._pull(min(skip, self._chunk_size))
            if not chunk:
                break
            keep = chunk[skip:]
            self._base += len(chunk) - len(keep)
            skip -= len(chunk) - len(keep)
            self._buf = keep
        return self.tell()

    def drain(self) -> None:
        """Pull whatever the source still holds (the end-of-archive padding), so `on_chunk` saw every byte."""
        self._base += len(self._buf)
        self._buf, self._at = b"", 0
        while chunk := self._pull(self._chunk_size):
            self._base += len(chunk)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def iter_members(
    stream: IO[bytes],
    *,
    source: str = "shard",
    wanted: frozenset[str] = ALLOWED_EXTS,
    report: Callable[[Member], None] | None = None,
) -> Iterator[Member]:
    """Every entry of a tar stream, in order, reading the data of allow-listed, `wanted` members only.

    Members outside the allow-list are yielded with `skipped` set and never read into memory; `report` is
    called for them (the default logs a warning). Truncated or corrupted tars raise DataError. `stream` is
    read forward only, once (a ChunkedReader is put around it unless it is one already)."""
    wanted = frozenset(wanted) & ALLOWED_EXTS
    reader = stream if isinstance(stream, ChunkedReader) else ChunkedReader(stream)
    try:
        # "r:" on the chunked reader: tarfile's own header parsing and member walk (PAX, GNU long names,
        # links), without its stream mode's per-read buffering.
        with tarfile.open(fileobj=reader, mode="r:", tarinfo=_StrictTarInfo) as tar:
            for entry in tar:
                key, ext = check_member_name(entry.name, source)
                member = Member(entry.name, key, ext, entry.size)
                if not entry.isreg():
                    member.skipped = "not a regular file"
                elif not ext or ext not in ALLOWED_EXTS:
                    member.skipped = f"extension {ext or '(none)'!r} is not allow-listed; never decoded"
                elif ext in wanted:
                    if entry.sparse is None:  # a plain member's data lies whole at offset_data
                        if reader.tell() != entry.offset_data:  # it always is after a plain header
                            reader.seek(entry.offset_data)
                        member.data = reader.read(entry.size)
                    else:
                        member.data = tar.extractfile(entry).read()
                    if len(member.data) != entry.size:
                        raise DataError(f"{source}: member {entry.name!r} is truncated")
                if member.skipped:
                    (report or _log_skip)(member)
                yield member
    except (_DamagedTar, tarfile.TarError, EOFError, OSError) as exc:
        detail = str(exc) if isinstance(exc, _DamagedTar) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{source}: truncated or corrupted tar ({detail})") from None


def _log_skip(member: Member) -> None:
    log.warning("skipped member %r: %s", member.name, member.skipped)


def decode_member(ext: str, data: bytes, *, decode_images: bool = False, where: str = "") -> Any:
    """Decode one allow-listed member: json -> dict, txt -> str, cls -> int, image -> bytes or PIL RGB."""
    try:
        if ext == "json":
            value = json.loads(data.decode("utf-8"))
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return value
        if ext == "txt":
            return data.decode("utf-8")
        if ext == "cls":
            return int(data.decode("ascii").strip())
        if ext in READ_IMAGE_EXTS:
            if not decode_images:
                return data
            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return image.convert("RGB")
    except Exception as exc:
        raise DataError(f"{where}: cannot decode {ext} member: {type(exc).__name__}: {exc}") from None
    raise ValueError(f"{ext!r} is not an allow-listed member")


def image_member(sample: dict[str, Any]) -> str | None:
    """The extension of a read sample's image member ('jpg', 'png'...); None when it has none."""
    return next((ext for ext in sample if ext in READ_IMAGE_EXTS), None)


def read_shard(
    source: str | os.PathLike | IO[bytes],
    *,
    decode_images: bool = False,
    include: Iterable[str] | None = None,
    on_skip: Callable[[Member], None] | None = None,
    storage_config=None,
) -> Iterator[dict[str, Any]]:
    """Stream the samples of one shard: {'__key__', 'jpg'|'png'|'webp', 'json', 'txt', 'cls'}.

    `source`: a local path, a file:// or s3:// URL (streamed, never downloaded whole) or a binary stream.
    `include`: member extensions to read (default all allow-listed); others are skipped unread.
    `decode_images=True` gives PIL RGB images instead of encoded bytes. Members outside the allow-list are
    passed to `on_skip` (default: a logged warning) and never decoded."""
    wanted = frozenset(include) if include is not None else ALLOWED_EXTS
    if isinstance(source, (str, os.PathLike)):
        from pipeline.storage.urls import split_url

        name = str(source)
        storage, key = split_url(name, storage_config)
        with storage.open_read(key) as stream:
            yield from _samples(stream, name, wanted, decode_images, on_skip)
    else:
        yield from _samples(source, getattr(source, "name", "shard"), wanted, decode_images, on_skip)


def _samples(stream, source, wanted, decode_images, on_skip) -> Iterator[dict[str, Any]]:
    current: dict[str, Any] | None = None
    seen: set[str] = set()
    for member in iter_members(stream, source=str(source), wanted=wanted, report=on_skip or _log_skip):
        if current is None or member.key != current["__key__"]:
            if member.key in seen:
                raise DataError(f"{source}: members of sample {member.key!r} are not contiguous")
            if current is not None:
                yield current
            seen.add(member.key)
            current = {"__key__": member.key, "__url__": str(source)}
        if member.data is None:
            continue
        if member.ext in current:
            raise DataError(f"{source}: sample {member.key!r} has two {member.ext} members")
        current[member.ext] = decode_member(
            member.ext, member.data, decode_images=decode_images, where=f"{source}: sample {member.key!r}"
        )
    if current is not None:
        yield current
