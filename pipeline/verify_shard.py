"""One committed shard verified against its commit record: the tar (size, sha256, members, samples, pids)
and its index fragment (against the record, and row by row against the tar's own json).

The tar is read once, forward, in chunks: the sha256 is taken from the same bytes the member walk parses,
so nothing is read twice. Only the allow-listed members are decoded (images only with `deep`); anything
else is reported as `unsafe`. A `ShardCheck` collects the problems, each of one of `PROBLEM_KINDS`;
pipeline/verify.py runs this over a whole dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dppp.dataset.format import (
    ALLOWED_EXTS,
    READ_IMAGE_EXTS,
    UnsafeShardError,
    fragment_name,
)
from dppp.dataset.index import read_fragment, sample_row
from dppp.dataset.limits import MemberLimits
from dppp.dataset.records import ShardRecord
from dppp.dataset.shard_reader import ChunkedReader, Member, decode_member, iter_members
from dppp.foundation.errors import DataError
from dppp.foundation.storage.base import Storage

Progress = Callable[[int], None]  # called with a number of bytes (or items) just processed

# The kinds of problems `verify` reports, worst first: a shard's status is its worst problem.
# `foreign`: committed by a config other than dataset.json's (its record's shard fingerprint differs).
PROBLEM_KINDS = (
    "missing",
    "truncated",
    "corrupted",
    "unsafe",
    "foreign",
    "incomplete",
    "uncommitted",
    "extra",
)


@dataclass
class ShardCheck:
    name: str  # the object's key
    index: int | None
    samples: int = 0
    bytes: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)

    def add(self, kind: str, message: str) -> None:
        assert kind in PROBLEM_KINDS, kind
        self.problems.append((kind, message))

    @property
    def status(self) -> str:
        if not self.problems:
            return "ok"
        return min((kind for kind, _ in self.problems), key=PROBLEM_KINDS.index)


class _Digest:
    """sha256 and size of every byte `ChunkedReader` pulls, one chunk at a time (no second read)."""

    def __init__(self, progress: Progress | None):
        self.hash = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def __call__(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)
        if self.progress:
            self.progress(len(chunk))


def verify_shard(
    storage: Storage,
    record: ShardRecord,
    size: int | None,
    *,
    deep: bool = False,
    progress: Progress | None = None,
    fragment_size: int | None = None,
    limits: MemberLimits | None = None,
) -> ShardCheck:
    """Check one committed shard against its record: size, sha256, samples, members, pids, and its index
    fragment (against the record, and row by row against the tar's json); `deep` decodes every image too.
    `fragment_size`: the fragment's size in the listing (None: absent). A member over its `limits` is
    reported `unsafe` with its size and never read; the rest of the tar is still walked and hashed."""
    check = ShardCheck(record.tar, record.index)
    where = storage.url_for(record.tar)
    if size is None:
        check.add("missing", f"{record.tar} is missing (its record says {record.bytes} bytes)")
        return check
    if size < record.bytes:
        check.add("truncated", f"{size} bytes, record says {record.bytes}")
    elif size > record.bytes:
        check.add("corrupted", f"{size} bytes, record says {record.bytes}")
    wanted = ALLOWED_EXTS if deep else frozenset({"json", "cls", "txt"})
    skipped: list[Member] = []
    samples: dict[str, dict[str, Any]] = {}
    oversized: set[str] = set()  # samples with a member over its limit: reported once, as `unsafe`
    digest = _Digest(progress)
    with storage.open_read(record.tar) as raw:
        reader = ChunkedReader(raw, on_chunk=digest)
        try:
            order: list[str] = []
            members = iter_members(
                reader, source=where, wanted=wanted, report=skipped.append, limits=limits, oversized="report"
            )
            for member in members:
                if member.oversized:
                    oversized.add(member.key)
                if member.skipped:
                    continue
                sample = samples.get(member.key)
                if sample is None:
                    sample = samples[member.key] = {}
                    order.append(member.key)
                elif order[-1] != member.key:
                    check.add("corrupted", f"members of sample {member.key} are not contiguous")
                if member.ext in sample:
                    check.add("corrupted", f"sample {member.key} has two {member.ext} members")
                sample[member.ext] = member.data
            reader.drain()
        except DataError as exc:
            kind = (
                "truncated"
                if size < record.bytes
                else "unsafe"
                if isinstance(exc, UnsafeShardError)
                else "corrupted"
            )
            check.add(kind, str(exc).removeprefix(f"{where}: "))
            reader.drain()
    check.bytes = digest.size
    check.samples = len(samples)
    if digest.hash.hexdigest() != record.sha256:
        check.add("corrupted", "sha256 differs from the record")
    for member in skipped:
        check.add("unsafe", f"member {member.name!r}: {member.skipped}")
    rows = _check_samples(check, record, samples, deep, oversized)
    _check_fragment(storage, check, record, fragment_size, rows if not check.problems else None)
    return check


def _check_samples(
    check: ShardCheck,
    record: ShardRecord,
    samples: dict[str, dict[str, Any]],
    deep: bool,
    oversized: set[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Members, decoding and pids of every sample; returns their index rows (from json and cls). Samples
    in `oversized` (a member never read, already reported) are counted, not checked."""
    if len(samples) != record.count:
        check.add("incomplete", f"{len(samples)} samples, record says {record.count}")
    missing = sorted(set(record.keys) - set(samples))
    unexpected = sorted(set(samples) - set(record.keys))
    if missing:
        check.add(
            "incomplete", f"samples missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    if unexpected:
        check.add("extra", f"samples not in the record: {', '.join(unexpected[:5])}")
    pids = set()
    rows = []
    for key, members in samples.items():
        if key in oversized:
            continue
        images = [ext for ext in members if ext in READ_IMAGE_EXTS] if deep else ["(not read)"]
        lacking = [ext for ext in ("json", "txt", "cls") if ext not in members]
        if lacking or not images or (deep and len(images) != 1):
            check.add(
                "incomplete", f"sample {key}: members {sorted(members)}, needs one image + json, txt, cls"
            )
            continue
        try:
            meta = decode_member("json", members["json"], where=key)
            pid = decode_member("cls", members["cls"], where=key)
            decode_member("txt", members["txt"], where=key)
            if deep:
                decode_member(images[0], members[images[0]], decode_images=True, where=key)
        except DataError as exc:
            check.add("corrupted", str(exc))
            continue
        pids.add(pid)
        rows.append(sample_row(key, record.index, record.image_format, meta, pid))
        if meta.get("pid", pid) != pid or meta.get("key", key) != key:
            check.add(
                "corrupted",
                f"sample {key}: json says key {meta.get('key')!r} pid {meta.get('pid')!r}, cls {pid}",
            )
    if samples and pids != set(record.pids) and not check.problems:
        check.add("incomplete", f"identities {sorted(pids)[:8]} differ from the record's {record.pids[:8]}")
    return rows


def _check_fragment(
    storage: Storage,
    check: ShardCheck,
    record: ShardRecord,
    size: int | None,
    rows: list[dict[str, Any]] | None,
) -> None:
    """The shard's index fragment against its record (size, sha256, rows, columns, keys) and, when the
    tar is sound (`rows` given), against the rows made from the tar's own json: what the index would say."""
    ref = record.fragment
    if ref is None:
        if size is not None:
            check.add(
                "uncommitted",
                f"{fragment_name(record.index)} is not named by the commit record (an "
                "interrupted `dppp shards index`; the next one rewrites it)",
            )
        return  # a shard committed before fragments existed: counted in a note
    if size is None:
        check.add(
            "missing",
            f"index fragment {ref.key} is missing (the commit record names it); "
            "rebuilding the index from the tars restores it",
        )
        return
    try:
        table = read_fragment(storage, ref, record.index)
    except DataError as exc:
        check.add("corrupted", f"index fragment: {str(exc).removeprefix(storage.url_for(ref.key) + ': ')}")
        return
    if table.column("key").to_pylist() != record.keys:
        check.add("corrupted", f"index fragment {ref.key}: its keys differ from the commit record's")
    elif set(table.column("shard").to_pylist()) - {record.index}:
        check.add("corrupted", f"index fragment {ref.key}: rows of another shard")
    elif rows is not None:
        names = table.column_names
        for want, have in zip(rows, table.to_pylist(), strict=False):
            wrong = [name for name in names if want.get(name) != have[name]] + sorted(set(want) - set(names))
            if wrong:
                name = wrong[0]
                check.add(
                    "corrupted",
                    f"index fragment {ref.key} disagrees with the tar: sample {want['key']}, "
                    f"{name} {have.get(name)!r} in the fragment, {want.get(name)!r} in the json",
                )
                return
