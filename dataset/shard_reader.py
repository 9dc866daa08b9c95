"""The safe streaming shard reader: tar members walked forward once, only allow-listed ones decoded.

The reader decodes only the allow-listed members (images, json, txt, cls). Anything else (a pickle, .pth,
.npy...) is never decoded: it is reported and skipped. Member names with '/', '..', an absolute path or a
control character are rejected, since a Re-ID shard never needs them and extracting them would be unsafe.
A local path, a file:// or s3:// URL or any binary stream is read in large chunks, never downloaded whole.
A member larger than its kind's limit (dataset/limits.py) is never read: its header says its size
first, and its data is stepped over in chunks, so memory stays bounded whatever a shard holds.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

from PIL import Image

from dppp.dataset.format import ALLOWED_EXTS, READ_IMAGE_EXTS, UnsafeShardError
from dppp.dataset.limits import MAX_HEADER_BYTES, MemberLimits, human_size
from dppp.foundation.errors import DamagedDataError
from dppp.foundation.storage.urls import split_url

log = logging.getLogger("dppp.shards")


@dataclass
class Member:
    """One tar entry as the reader saw it. `data` is None when the member was not read."""

    name: str
    key: str
    ext: str
    size: int
    data: bytes | None = None
    skipped: str | None = None  # why it was not decoded (not allow-listed, not a regular file...)
    oversized: bool = False  # over its kind's size limit: never read


class OversizedMemberError(DamagedDataError):
    """A member larger than its kind's limit (MemberLimits): refused without reading it."""


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

    _HEADER_TYPES = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
    _HEADER_TYPES |= {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}

    def _proc_member(self, tar):
        # tarfile reads a PAX or GNU long-name header's data whole, before the member walk sees it.
        if self.type in self._HEADER_TYPES and self.size > MAX_HEADER_BYTES:
            raise _DamagedTar(
                f"extended header at byte {self.offset} is {human_size(self.size)} (at most "
                f"{human_size(MAX_HEADER_BYTES)}); never read"
            )
        return super()._proc_member(tar)


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
    limits: MemberLimits | None = None,
    oversized: Literal["raise", "report"] = "raise",
) -> Iterator[Member]:
    """Every entry of a tar stream, in order, reading the data of allow-listed, `wanted` members only.

    Members outside the allow-list are yielded with `skipped` set and never read into memory; `report` is
    called for them (the default logs a warning). A wanted member over its kind's limit (`limits`, default
    MemberLimits()) raises OversizedMemberError before a byte of it is read; with `oversized="report"`
    (verify) every allow-listed member over its limit, wanted or not, is skipped and reported like the
    others instead. Members that are not wanted are stepped over unread whatever their size. Truncated or
    corrupted tars raise DamagedDataError naming the last member read. `stream` is read forward only, once
    (a ChunkedReader is put around it unless it is one already)."""
    wanted = frozenset(wanted) & ALLOWED_EXTS
    limits = limits or _DEFAULT_LIMITS
    reader = stream if isinstance(stream, ChunkedReader) else ChunkedReader(stream)
    last = None  # the last member's name, for a message about damage after it
    try:
        # "r:" on the chunked reader: tarfile's own header parsing and member walk (PAX, GNU long names,
        # links), without its stream mode's per-read buffering.
        with tarfile.open(fileobj=reader, mode="r:", tarinfo=_StrictTarInfo) as tar:
            for entry in tar:
                key, ext = check_member_name(entry.name, source)
                member = Member(entry.name, key, ext, entry.size)
                last = entry.name
                if not entry.isreg():
                    member.skipped = "not a regular file"
                elif not ext or ext not in ALLOWED_EXTS:
                    member.skipped = f"extension {ext or '(none)'!r} is not allow-listed; never decoded"
                elif (ext in wanted or oversized == "report") and entry.size > limits.cap(ext):
                    problem = _over_limit(member, limits)
                    if oversized == "raise":
                        raise OversizedMemberError(f"{source}: member {entry.name!r} {problem}")
                    member.skipped, member.oversized = problem, True
                elif ext in wanted:
                    if entry.sparse is None:  # a plain member's data lies whole at offset_data
                        if reader.tell() != entry.offset_data:  # it always is after a plain header
                            reader.seek(entry.offset_data)
                        member.data = reader.read(entry.size)
                    else:
                        member.data = tar.extractfile(entry).read()
                    if len(member.data) != entry.size:
                        raise DamagedDataError(f"{source}: member {entry.name!r} is truncated")
                if member.skipped:
                    (report or _log_skip)(member)
                yield member
    except (_DamagedTar, tarfile.TarError, EOFError, OSError) as exc:
        detail = str(exc) if isinstance(exc, _DamagedTar) else f"{type(exc).__name__}: {exc}"
        where = f" after member {last!r}" if last else ""
        raise DamagedDataError(f"{source}: truncated or corrupted tar{where} ({detail})") from None


_DEFAULT_LIMITS = MemberLimits()


def _over_limit(member: Member, limits: MemberLimits) -> str:
    kind = "image" if member.ext in READ_IMAGE_EXTS else member.ext
    cap = limits.cap(member.ext)
    return (
        f"is {human_size(member.size)} ({member.size} bytes), over the {human_size(cap)} limit for "
        f"{kind} members (member_limits.{limits.field_for(member.ext)}); never read"
    )


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

            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return image.convert("RGB")
    except Exception as exc:
        raise DamagedDataError(f"{where}: cannot decode {ext} member: {type(exc).__name__}: {exc}") from None
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
    name: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream the samples of one shard: {'__key__', 'jpg'|'png'|'webp', 'json', 'txt', 'cls'}.

    `source`: a local path, a file:// or s3:// URL (streamed, never downloaded whole) or a binary stream.
    `include`: member extensions to read (default all allow-listed); others are skipped unread.
    `decode_images=True` gives PIL RGB images instead of encoded bytes. Members outside the allow-list are
    passed to `on_skip` (default: a logged warning) and never decoded. `storage_config` (a ShardStorageConfig)
    opens a URL and gives the member size limits (its `member_limits`; default MemberLimits()). `name`:
    the shard as messages name it (default: the URL, or the stream's name)."""
    wanted = frozenset(include) if include is not None else ALLOWED_EXTS
    limits = storage_config.member_limits if storage_config is not None else None
    if isinstance(source, (str, os.PathLike)):
        storage, key = split_url(str(source), storage_config)
        with storage.open_read(key) as stream:
            yield from _samples(stream, name or str(source), wanted, decode_images, on_skip, limits)
    else:
        where = name or getattr(source, "name", "shard")
        yield from _samples(source, where, wanted, decode_images, on_skip, limits)


def _samples(stream, source, wanted, decode_images, on_skip, limits) -> Iterator[dict[str, Any]]:
    current: dict[str, Any] | None = None
    seen: set[str] = set()
    members = iter_members(
        stream, source=str(source), wanted=wanted, report=on_skip or _log_skip, limits=limits
    )
    for member in members:
        if current is None or member.key != current["__key__"]:
            if member.key in seen:
                raise DamagedDataError(f"{source}: members of sample {member.key!r} are not contiguous")
            if current is not None:
                yield current
            seen.add(member.key)
            current = {"__key__": member.key, "__url__": str(source)}
        if member.data is None:
            continue
        if member.ext in current:
            raise DamagedDataError(f"{source}: sample {member.key!r} has two {member.ext} members")
        current[member.ext] = decode_member(
            member.ext, member.data, decode_images=decode_images, where=f"{source}: sample {member.key!r}"
        )
    if current is not None:
        yield current
