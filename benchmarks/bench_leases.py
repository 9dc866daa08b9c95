"""What shard leases cost the `dppp generate` driver per shard, against handing shards out without them.

    python benchmarks/bench_leases.py                        # a temporary folder, 200 shards
    python benchmarks/bench_leases.py --out s3://bucket/x    # on S3 (endpoint from AWS_ENDPOINT_URL)

For every shard of a real plan (configs/demo.yaml, dataset.json written as `dppp generate` writes it) the
driver's lease work as a run does it: `LeasedQueue.take` (create the lease, read it back, re-read
dataset.json, read the shard's record) then `done` (release), against `ShardQueue` (no leases) on the
same plan, in the same run. Also one heartbeat over 16 held leases (what the renewal thread does every
lease_ttl_s / 3). Prints ms per shard.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_shard_ms(queue, shards: int) -> float:
    started = time.perf_counter()
    for _ in range(shards):
        shard = queue.take()
        queue.done(shard)
    return (time.perf_counter() - started) / shards * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="where (default: a temporary folder)")
    parser.add_argument("--shards", type=int, default=200)
    args = parser.parse_args()

    from dppp.config import load_experiment
    from dppp.dataset.records import write_dataset_manifest
    from dppp.foundation.storage.urls import open_storage
    from dppp.pipeline.generate import build_plan
    from dppp.pipeline.leases import JobIdentity, LeasedQueue, Leases, ShardQueue

    with tempfile.TemporaryDirectory(prefix="bench-leases-") as tmp:
        out = args.out or str(Path(tmp) / "dataset")
        sets = [f"generate.out={out}", f"generate.identities={args.shards}", "generate.ids_per_shard=1"]
        plan = build_plan(load_experiment(ROOT / "configs/demo.yaml", sets).generate)
        storage = open_storage(out)
        write_dataset_manifest(storage, plan.manifest())
        plain = per_shard_ms(ShardQueue(list(plan.shards)), args.shards)
        leases = Leases(storage, JobIdentity.current(), ttl_s=120)
        leased = per_shard_ms(LeasedQueue(list(plan.shards), leases, plan.fingerprint, poll_s=5), args.shards)
        for index in range(16):
            leases.take(index)
        started = time.perf_counter()
        leases.renew()
        beat = (time.perf_counter() - started) * 1000
        leases.close()
    print(f"storage: {'S3' if out.startswith('s3://') else 'local folder'}, {args.shards} shards")
    print(f"hand-out without leases: {plain:.3f} ms/shard")
    print(f"with leases (take + checks + release): {leased:.2f} ms/shard")
    print(f"one heartbeat over 16 held leases: {beat:.1f} ms")


if __name__ == "__main__":
    main()
