"""`dppp shards verify`'s parallelism by storage: threads vs one process per CPU, on loopback S3 and disk.

    .venv/bin/python benchmarks/bench_verify_storage.py [--shards 400] [--samples 20] [--repeats 3]

The dataset has the shape that made `verify s3://...` 6x slower with a process per CPU than with one
process (issue 21: 2,200 shards of ~134 KiB): many small shards, where a shard's time is mostly round trips.
The same shards are published to a moto S3 endpoint on loopback and to a local folder, then verified:

  threads        `--workers 1`: shards IO_THREADS at a time on threads (the baseline)
  auto           `--workers 0`, the default: threads on an object store, processes for a large local set
  processes      `--workers <CPUs>`: one process per CPU, each verifying one shard at a time

Each figure is the best of --repeats runs, the variants alternating so all see the same machine load.
Ratios are time(threads) / time(variant): above 1.0 the variant is faster than the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402


def publish(storage, shards: int, samples: int, scratch: Path) -> int:
    """`shards` committed shards of `samples` small JPEGs each (make_samples' 64x128 images); total bytes."""
    from dppp.dataset.records import write_dataset_manifest
    from dppp.dataset.shard_writer import write_shard
    from dppp.pipeline.publish import publish_shard
    from tests.conftest import make_samples

    write_dataset_manifest(storage, {"plan": {"shards": shards}})
    total = 0
    for index in range(shards):
        path = scratch / f"{index}.tar"
        info = write_shard(make_samples(samples // 4, 4, first_pid=index * samples, size=(64, 128)), path)
        publish_shard(storage, index, path, info)
        total += info.bytes
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=400)
    parser.add_argument("--samples", type=int, default=20, help="samples per shard (a multiple of 4)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from dppp.foundation.storage.urls import open_storage
    from dppp.pipeline.verify import verify_dataset
    from tests.conftest import FAKE_CREDENTIALS, MotoS3

    cpus = os.cpu_count() or 1
    os.environ.update(FAKE_CREDENTIALS)
    server = MotoS3()
    try:
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint_url
        with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
            scratch = Path(tmp)
            stores = {
                "s3": open_storage(server.bucket("bench") + "/ds"),
                "local": open_storage(str(scratch / "ds")),
            }
            for store in stores.values():
                size = publish(store, args.shards, args.samples, scratch)
            print(
                f"{args.shards} shards of {args.samples} samples, {size / 2**20:.1f} MiB per copy, "
                f"{cpus} CPUs, best of {args.repeats}"
            )
            variants = {"threads": 1, "auto": 0, "processes": cpus}
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.repeats):
                for where, store in stores.items():
                    for name, workers in variants.items():
                        report = timed(lambda s=store, w=workers: verify_dataset(s.url, workers=w))
                        assert report.result.ok and report.result.verified == args.shards
                        key = (where, name)
                        best[key] = min(best.get(key, float("inf")), report.wall_s)
            print(f"{'storage':8} {'variant':22} {'wall s':>8} {'shards/s':>9} {'vs threads':>10}")
            for (where, name), wall in best.items():
                label = f"{name} ({'--workers ' + str(variants[name])})"
                ratio = best[(where, "threads")] / wall
                print(f"{where:8} {label:22} {wall:8.2f} {args.shards / wall:9.0f} {ratio:10.2f}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
