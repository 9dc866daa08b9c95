"""Peak memory of the shard commands on a shard with one huge member, against the same commands on the
same dataset without it, measured in the same run.

    .venv/bin/python benchmarks/bench_member_limits.py [--member-mb 300] [--repeats 1]

A dataset of 3 small shards; shard 1 is then rewritten with one sample's json member padded to
--member-mb MiB (a valid JSON object, its record's bytes and sha256 made to match, as the issue-21 probe
did). Each command runs in a fresh process; its peak RSS (its own VmHWM, or that of the largest process
it started, whichever is larger) and wall time are reported:

  clean          verify --deep / show on the dataset before the padding (the baseline)
  no limit       the same on the padded dataset with member_limits.json_max raised past the member, i.e.
                 the reader reading it whole, as every reader did before the limits existed
  default limit  the same with the default limits: the member is refused unread (verify: `unsafe`,
                 exit 1; show: one line, exit 1)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIG_KEY = "p000002_v001"

# One command in a fresh interpreter; prints its exit status, then its peak RSS in kB: its own (VmHWM) or
# that of the largest process it started (verify runs shards in processes on datasets of 256 MiB and more).
CHILD = """
import resource, sys
from dppp.cli import main
code = main(sys.argv[1:])
hwm = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
print(code, max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=sys.stderr)
"""


def build(root: Path) -> str:
    from dppp.dataset.index import write_index
    from dppp.dataset.records import write_dataset_manifest
    from dppp.dataset.shard_writer import write_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.pipeline.publish import publish_shard
    from tests.conftest import make_samples

    storage = open_storage(str(root))
    write_dataset_manifest(storage, {"format": "dppp-dataset/1"})
    for index in range(3):
        path = root.parent / f"build-{index}.tar"
        info = write_shard(make_samples(2, 3, first_pid=2 * index), path)
        publish_shard(storage, index, path, info)
    write_index(storage)
    return storage.url


class _Padding:
    """The big json member's bytes: the sample's own json with a "pad" string added, produced a MiB at a
    time (the benchmark's own memory stays small)."""

    def __init__(self, original: bytes, size: int):
        self.head, self.tail = original[:-1] + b',"pad":"', b'"}'
        self.size, self.at = size, 0

    def read(self, n: int) -> bytes:
        body = self.size - len(self.head) - len(self.tail)
        out = b""
        while len(out) < n and self.at < self.size:
            if self.at < len(self.head):
                piece = self.head[self.at :]
            elif self.at < len(self.head) + body:
                piece = b"x" * min(n - len(out), len(self.head) + body - self.at, 1 << 20)
            else:
                piece = self.tail[self.at - len(self.head) - body :]
            piece = piece[: n - len(out)]
            out += piece
            self.at += len(piece)
        return out


def pad_member(root: Path, size: int) -> None:
    """Rewrite shard 1 with BIG_KEY's json padded to `size` bytes; its record then states this very tar."""
    tar_path = root / "shards" / "shard-000001.tar"
    with tarfile.open(tar_path) as old:
        members = [(m, old.extractfile(m).read()) for m in old.getmembers()]
    padded = tar_path.with_suffix(".tmp")
    with tarfile.open(padded, "w", format=tarfile.USTAR_FORMAT) as new:
        for info, data in members:
            if info.name == f"{BIG_KEY}.json":
                info.size = size
                new.addfile(info, _Padding(data, size))
            else:
                import io

                new.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256()
    with open(padded, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    os.replace(padded, tar_path)
    record_path = root / "shards" / "shard-000001.json"
    record = json.loads(record_path.read_text())
    record.update(bytes=tar_path.stat().st_size, sha256=digest.hexdigest())
    record_path.write_text(json.dumps(record))


def run(argv: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS in MB, wall s) of `dppp *argv` in a fresh process (stdout discarded)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wall = time.perf_counter() - started
    code, kb = done.stderr.decode().strip().splitlines()[-1].split()
    return int(code), int(kb) / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--member-mb", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    size = args.member_mb << 20
    unlimited = ["--member-limit", f"json={size + (1 << 20)}"]
    with tempfile.TemporaryDirectory(prefix="dppp-bench-limits-") as scratch:
        root = Path(scratch) / "ds"
        url = build(root)
        commands = {
            "verify --deep": ["shards", "verify", url, "--deep"],
            "show": ["shards", "show", url, BIG_KEY],
        }
        rows = []
        for name, argv in commands.items():
            rows.append((name, "clean", *best(argv, args.repeats)))
        pad_member(root, size)
        for name, argv in commands.items():
            rows.append((name, "no limit", *best(argv + unlimited, args.repeats)))
            rows.append((name, "default limit", *best(argv, args.repeats)))
    print(f"shard 1: one json member of {args.member_mb} MiB; peak RSS of a fresh `dppp` process\n")
    print("| command | dataset / limit | exit | peak RSS MB | x clean | wall s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    clean = {name: rss for name, kind, _, rss, _ in rows if kind == "clean"}
    for name, kind, code, rss, wall in rows:
        print(f"| {name} | {kind} | {code} | {rss:.0f} | {rss / clean[name]:.2f} | {wall:.1f} |")


def best(argv, repeats) -> tuple[int, float, float]:
    """The lowest peak RSS of `repeats` runs (interference only adds), with its exit code and wall time."""
    return min((run(argv) for _ in range(repeats)), key=lambda r: r[1])


if __name__ == "__main__":
    main()
