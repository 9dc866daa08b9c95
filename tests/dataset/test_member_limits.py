"""Size limits on shard members (dataset/limits.py), enforced by the one reader for every command
and the trainer (tests/trainer/test_damaged_data.py): an oversized member is named with its size and never
read. Real tars, small limits (the memory this bounds is measured in benchmarks/bench_shards.py, not here)."""

from __future__ import annotations

import io
import tarfile

import pytest

from dppp.dataset.format import shard_name
from dppp.dataset.limits import MemberLimits, ShardStorageConfig, limits_from_flags
from dppp.dataset.shard_reader import OversizedMemberError, iter_members, read_shard
from dppp.dataset.shard_writer import Sample
from dppp.foundation.errors import DamagedDataError
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.verify import verify_dataset
from tests.conftest import tar_bytes
from tests.pipeline.test_inspect import build_dataset, run

BIG_KEY = "p000002_v001"  # shard 1's second sample: its json is padded past a 4 KiB limit
PAD = 20_000


def _pad_one_json(index, samples):
    """Shard 1 carries one sample whose json is ~20 kB; the record is made from that very tar."""
    if index != 1:
        return samples
    return [
        Sample(s.key, s.image_bytes, s.image_ext, {**s.metadata, "pad": "x" * PAD}, s.prompt, s.pid)
        if s.key == BIG_KEY
        else s
        for s in samples
    ]


@pytest.fixture
def padded(tmp_path, make_samples):
    storage = build_dataset(
        open_storage(str(tmp_path / "ds")), tmp_path, make_samples, samples_for=_pad_one_json
    )
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(shard_name(1)))) as tar:
        size = tar.getmember(f"{BIG_KEY}.json").size
    assert PAD < size < PAD + 1000
    return storage, size


SMALL = ShardStorageConfig(member_limits=MemberLimits(json_max="4KiB"))


def test_verify_names_the_oversized_member_and_its_size(padded, capsys):
    storage, size = padded
    assert verify_dataset(storage.url).ok  # the defaults (1 MiB of json) accept ~20 kB
    report = verify_dataset(storage.url, config=SMALL)
    [check] = report.checks
    assert check.name == shard_name(1) and check.status == "unsafe"
    expected = (
        f"member '{BIG_KEY}.json': is {size / 1024:.1f} KiB ({size} bytes), over the 4.0 KiB limit for "
        "json members (member_limits.json_max); never read"
    )
    assert check.problems == [("unsafe", expected)]  # one problem: not also 'incomplete' for its sample
    assert check.samples == 6  # the walk went on past it: every sample of the shard counted
    code, out, _ = run(capsys, "verify", storage.url, "--member-limit", "json=4KiB")
    assert code == 1 and "unsafe" in out and "FAILED: 1 problem(s)" in out  # the table wraps the message


def test_every_command_refuses_an_oversized_member_in_one_line(padded, capsys):
    storage, size = padded
    limit = ("--member-limit", "json=4KiB")
    expected = (
        f"error: {storage.url_for(shard_name(1))}: member '{BIG_KEY}.json' is {size / 1024:.1f} KiB "
        f"({size} bytes), over the 4.0 KiB limit for json members (member_limits.json_max); never read\n"
    )
    for argv in (
        ("show", storage.url, BIG_KEY, *limit),
        ("grid", storage.url, "--out", str(storage.local_root.parent / "g.png"), "--shard", "1", *limit),
        ("index", storage.url, "--from-tars", *limit),
    ):
        code, _, err = run(capsys, *argv)
        assert (code, err) == (1, expected), argv
    assert not (storage.local_root.parent / "g.png").exists()
    # Without the override the same commands read it (the defaults allow 1 MiB of json).
    code, out, _ = run(capsys, "show", storage.url, BIG_KEY)
    assert code == 0 and '"pad"' in out


class _Recording(io.RawIOBase):
    """A file read through `read`, recording the largest single read the reader asked for."""

    def __init__(self, data: bytes):
        self.inner, self.largest = io.BytesIO(data), 0

    def readable(self) -> bool:
        return True

    def read(self, n=-1):
        data = self.inner.read(n)
        self.largest = max(self.largest, len(data))
        return data


def test_the_default_limit_refuses_a_2_mib_json_without_reading_it_whole(make_samples):
    sample = make_samples(1, 1)[0]
    big = (f"{sample.key}.json", b'{"pad": "' + b"x" * (2 << 20) + b'"}')
    data = tar_bytes([m for m in sample.members() if not m[0].endswith(".json")] + [big])
    stream = _Recording(data)
    with pytest.raises(OversizedMemberError) as info:
        list(read_shard(stream, name="s.tar"))
    assert str(info.value) == (
        f"s.tar: member '{sample.key}.json' is 2.0 MiB ({len(big[1])} bytes), over the 1.0 MiB limit for "
        "json members (member_limits.json_max); never read"
    )
    assert stream.largest <= 1 << 20  # the reader's chunk: the member was never asked for whole
    assert isinstance(info.value, DamagedDataError) and info.value.exit_code == 1
    # verify's mode: skipped unread and reported, the walk goes on to the end, every byte passed once.
    stream = _Recording(data)
    skipped = []
    members = list(iter_members(stream, report=skipped.append, oversized="report"))
    assert [m.name for m in skipped] == [big[0]] and skipped[0].data is None and skipped[0].oversized
    assert len(members) == 4 and stream.largest <= 1 << 20 and stream.inner.tell() == len(data)


def test_a_member_nobody_wants_is_stepped_over_whatever_its_size(make_samples):
    sample = make_samples(1, 1)[0]
    data = tar_bytes(sample.members())
    tiny = MemberLimits(image_max=100)
    [read] = read_shard(
        io.BytesIO(data), include={"json", "cls"}, storage_config=ShardStorageConfig(member_limits=tiny)
    )
    assert read["cls"] == sample.pid and "jpg" not in read
    with pytest.raises(OversizedMemberError, match="over the 100 B limit for image members"):
        list(read_shard(io.BytesIO(data), storage_config=ShardStorageConfig(member_limits=tiny)))


def test_a_huge_extended_header_is_refused_before_tarfile_reads_it():
    name = "p000000_v000.json"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 2
        info.pax_headers = {"comment": "x" * (1 << 20)}  # a 1 MiB PAX record before the member
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(
        DamagedDataError,
        match=r"^s.tar: truncated or corrupted tar \(extended header at byte 0 is 1.0 MiB \(at most 64.0 KiB\); never read\)$",
    ):
        list(read_shard(io.BytesIO(buffer.getvalue()), name="s.tar"))


def test_limits_are_settings_validated_like_any_other(tmp_path, capsys):
    from dppp.config import load_experiment

    assert limits_from_flags(["image=256MiB", "json = 2KiB"]).model_dump() == {
        **MemberLimits().model_dump(),
        "image_max": 256 << 20,
        "json_max": 2048,
    }
    experiment = load_experiment(None, ["train.data.storage.member_limits.image_max=1KiB"])
    assert experiment.train.data.storage.member_limits.image_max == 1024
    with pytest.raises(Exception, match="train.data.storage.member_limits.json_max"):
        load_experiment(None, ["train.data.storage.member_limits.json_max=lots"])
    url = str(tmp_path / "none")
    for flag, problem in (
        ("json=lots", "json_max: could not parse value and unit from byte string"),
        ("pickle=1MiB", "expected KIND=SIZE with KIND one of json, txt, cls, image, got 'pickle=1MiB'"),
        ("image=0", "image_max: Input should be greater than 0"),
    ):
        code, _, err = run(capsys, "verify", url, "--member-limit", flag)
        assert (code, err) == (2, f"error: --member-limit: {problem}\n"), flag
