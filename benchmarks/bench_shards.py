"""Shard I/O throughput against plain baselines measured in the same run, on local disk and loopback S3.

    .venv/bin/python benchmarks/bench_shards.py [--ids 100] [--views 20] [--shards 4] [--repeats 3]

write:  dppp's writer (canonical json, checks, sha256 on the fly, atomic rename) vs tarfile writing the very
        same member bytes; then write + publish (commit record included) vs plain tar + copy / boto3
        upload_file.
read:   `verify` (stream, sha256, parse every header, decode json/txt/cls, check against the record) and
        `read_shard` (the trainer's streaming path) vs a plain sequential read of the same objects through
        the same storage (`storage.open_read`, 1 MiB reads), warm and with the files evicted from the page
        cache first; on S3 also vs a bare boto3 GET. Two "floor" rows time sha256 alone and tarfile's header
        walk alone over the same files: no verify can beat either.

Each figure is the best of --repeats runs, baseline and dppp alternating so both see the same machine
load. Ratios are throughput(dppp) / throughput(baseline): 1.0 means no overhead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402


def make_samples(ids: int, views: int):
    """Re-ID-sized JPEGs (128x256, quality 90, textured so they compress like renders) with full metadata."""
    import numpy as np
    from PIL import Image

    from dppp.dataset.keys import sample_key
    from dppp.dataset.shard_writer import Sample

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 170, 128)[None, :, None]
    samples = []
    for pid in range(ids):
        for view in range(views):
            pixels = (rng.random((256, 128, 3)) * 70 + ramp).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
            key = sample_key(pid, view)
            attributes = {f"dim{i}": f"value{(pid + i * view) % 7}" for i in range(14)}
            prompt = "a full-body photo of a young adult man in a red jacket and blue jeans, street, daylight"
            meta = {
                "key": key,
                "pid": pid,
                "view": view,
                "camid": view % 6,
                "attributes": attributes,
                "prompt": prompt,
                "negative_prompt": "blurry, lowres",
                "seed": pid * 1000 + view,
                "identity_seed": pid,
                "renderer": {"name": "procedural", "steps": 0, "size": [128, 256]},
                "versions": {"dppp": "0.1.0", "torch": "2.13"},
            }
            samples.append(Sample(key, buffer.getvalue(), "jpg", meta, prompt, pid))
    return samples


def split(samples, shards: int):
    """Whole identities per shard, like the generation plan."""
    pids = sorted({s.pid for s in samples})
    per = -(-len(pids) // shards)
    groups = [set(pids[i : i + per]) for i in range(0, len(pids), per)]
    return [[s for s in samples if s.pid in group] for group in groups]


def plain_tar(members, path) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def measure(pairs: dict, repeats: int) -> dict:
    """pairs: name -> (baseline fn, dppp fn[, untimed setup run before each of them]), run alternately.
    Returns name -> best times (base wall, dppp wall, base cpu, dppp cpu)."""
    runs = {name: [] for name in pairs}
    for _ in range(repeats):
        for name, (base, ours, *setup) in pairs.items():
            timings = ()
            for fn in (base, ours):
                for prepare in setup:
                    prepare()
                # CPU time is what the code costs; wall time also counts the other tenants of a shared
                # machine, and the S3 server's work.
                timing = timed(fn)
                timings += (timing.wall_s, timing.cpu_s)
            runs[name].append(timings)
    # Best of N, as timeit does: on a machine shared with other jobs, interference only ever adds time (CPU
    # time too: a busy sibling core slows this one), so the fastest run is the least disturbed, and taking
    # it for baseline and dppp alike keeps the ratio fair. Medians of 3 swung the write ratio 0.65-0.97.
    return {name: tuple(min(r[i] for r in rows) for i in (0, 2, 1, 3)) for name, rows in runs.items()}


def drop_page_cache(paths):
    """Evict these files from the page cache (POSIX_FADV_DONTNEED: no root, touches no other file), so the
    next read comes from the disk. On this VM the disk is virtual: the host may still cache it."""

    def run():
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()

    from dppp.dataset.format import shard_name
    from dppp.dataset.shard_reader import read_shard
    from dppp.dataset.shard_writer import write_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.pipeline.publish import publish_shard
    from dppp.pipeline.verify import verify_dataset

    samples = make_samples(args.ids, args.views)
    groups = split(samples, args.shards)
    members = [[m for s in sorted(g, key=lambda s: s.key) for m in s.members()] for g in groups]
    work = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    results: dict[str, tuple[float, ...]] = {}
    try:
        scratch = work / "scratch"
        scratch.mkdir()

        def write_plain():
            for i, m in enumerate(members):
                plain_tar(m, scratch / f"plain-{i}.tar")

        infos = {}

        def write_ours():
            for i, g in enumerate(groups):
                infos[i] = write_shard(g, scratch / f"ours-{i}.tar")

        write_ours()
        total_bytes = sum(info.bytes for info in infos.values())
        local = open_storage(str(work / "local"))
        plain_dest = work / "plain-dest"
        plain_dest.mkdir()

        def publish_plain_local():
            write_plain()
            for i in range(len(groups)):
                shutil.copyfile(scratch / f"plain-{i}.tar", plain_dest / f"shard-{i}.tar")

        def publish_plain_local_durable():
            """The same, made durable as a publish must be before its commit record: fsync the copy."""
            write_plain()
            for i in range(len(groups)):
                shutil.copyfile(scratch / f"plain-{i}.tar", plain_dest / f"shard-{i}.tar")
                fd = os.open(plain_dest / f"shard-{i}.tar", os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

        def publish_ours(storage):
            def run():
                write_ours()
                for i in range(len(groups)):
                    publish_shard(storage, i, scratch / f"ours-{i}.tar", infos[i])

            return run

        def read_plain(storage):
            """The baseline for reading: the same objects through the same storage, 1 MiB reads, nothing else."""

            def run():
                for i in range(len(groups)):
                    with storage.open_read(shard_name(i)) as f:
                        while f.read(1 << 20):
                            pass

            return run

        read_plain_local = read_plain(local)
        local_tars = [local.root / shard_name(i) for i in range(len(groups))]

        def sha256_only():  # the floor of any verify: its checksum alone
            for path in local_tars:
                with open(path, "rb") as f:
                    hashlib.file_digest(f, "sha256")

        def tar_walk_only():  # tarfile's header parsing alone, data skipped, no checks
            for path in local_tars:
                with tarfile.open(path, mode="r:") as tar:
                    for _ in tar:
                        pass

        def read_shard_all(storage):
            def run():
                for i in range(len(groups)):
                    with storage.open_read(shard_name(i)) as stream:
                        for _ in read_shard(stream):
                            pass

            return run

        def verify(url, workers=1, config=None):
            def run():
                report = verify_dataset(url, config=config, workers=workers)
                assert all(c.status == "ok" for c in report.checks), [c.problems for c in report.checks]

            return run

        import webdataset as wds  # imported before timing: its import is not part of reading

        def read_stock_webdataset():
            urls = [str(local.root / shard_name(i)) for i in range(len(groups))]
            for _ in wds.WebDataset(urls, shardshuffle=False):
                pass

        publish_ours(local)()
        results.update(
            measure(
                {
                    "local  read_shard stream (vs stock webdataset)": (
                        read_stock_webdataset,
                        read_shard_all(local),
                    ),
                    "local  write shard (vs plain tarfile)": (write_plain, write_ours),
                    "local  write + publish (vs tar + copy)": (publish_plain_local, publish_ours(local)),
                    "local  write + publish (vs tar + copy + fsync)": (
                        publish_plain_local_durable,
                        publish_ours(local),
                    ),
                    "local  verify, 1 process (vs plain read)": (read_plain_local, verify(local.url)),
                    "local  verify, cold cache (vs cold plain read)": (
                        read_plain_local,
                        verify(local.url),
                        drop_page_cache(local_tars),
                    ),
                    "local  verify, 2 processes (vs plain read)": (
                        read_plain_local,
                        verify(local.url, workers=2),
                    ),
                    "local  read_shard stream (vs plain read)": (read_plain_local, read_shard_all(local)),
                    "local  floor: sha256 only (vs plain read)": (read_plain_local, sha256_only),
                    "local  floor: tarfile header walk (vs plain read)": (read_plain_local, tar_walk_only),
                },
                args.repeats,
            )
        )

        if not args.skip_s3:
            results.update(
                s3_benchmarks(
                    args, groups, scratch, write_plain, publish_ours, read_shard_all, verify, read_plain
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = total_bytes / (1 << 20)
    print(
        f"\n{len(samples)} samples ({args.ids} ids x {args.views} views), {len(groups)} shards, {mib:.1f} MiB, "
        f"best of {args.repeats}; cpus={os.cpu_count()}"
    )
    print(f"{'benchmark':48s} {'baseline MiB/s':>15s} {'dppp MiB/s':>11s} {'ratio':>6s} {'CPU ratio':>10s}")
    for name, (base, ours, base_cpu, ours_cpu) in results.items():
        print(
            f"{name:48s} {mib / base:15.1f} {mib / ours:11.1f} {base / ours:6.2f} {base_cpu / ours_cpu:10.2f}"
        )


def s3_benchmarks(args, groups, scratch, write_plain, publish_ours, read_shard_all, verify, read_plain):
    import boto3

    from dppp.dataset.format import shard_name
    from dppp.dataset.limits import ShardStorageConfig
    from dppp.foundation.storage.urls import open_storage
    from tests.conftest import FAKE_CREDENTIALS, MotoS3

    os.environ.update(FAKE_CREDENTIALS)
    server = MotoS3()
    try:
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint_url
        url = server.bucket("bench") + "/ds"
        storage = open_storage(url, ShardStorageConfig())
        client = boto3.client("s3")

        def publish_plain_s3():
            write_plain()
            for i in range(len(groups)):
                client.upload_file(str(scratch / f"plain-{i}.tar"), "bench", f"plain/shard-{i}.tar")

        def read_plain_s3():
            for i in range(len(groups)):
                body = client.get_object(Bucket="bench", Key=f"ds/{shard_name(i)}")["Body"]
                while body.read(1 << 20):
                    pass

        publish_ours(storage)()
        return measure(
            {
                "s3     write + publish (vs tar + upload_file)": (publish_plain_s3, publish_ours(storage)),
                "s3     verify, 1 process (vs plain GET)": (read_plain_s3, verify(url)),
                "s3     verify, 1 process (vs storage.open_read)": (read_plain(storage), verify(url)),
                "s3     verify, 2 processes (vs plain GET)": (read_plain_s3, verify(url, workers=2)),
                "s3     read_shard stream (vs plain GET)": (read_plain_s3, read_shard_all(storage)),
            },
            args.repeats,
        )
    finally:
        server.close()


if __name__ == "__main__":
    main()
