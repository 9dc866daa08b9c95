"""S3 upload and download speed of S3Storage, before and after boto3's managed transfer, in the same run.

    python benchmarks/bench_s3_transfer.py                       # 8, 64 and 256 MB files
    python benchmarks/bench_s3_transfer.py --sizes 8 96 256
    python benchmarks/bench_s3_transfer.py --latency-ms 20          # each request held 20 ms (an RTT)

BEFORE is S3Storage as it was at --before-ref (the hand-written multipart upload, its parts one after
another, and the retry loop around each call), loaded from git into a temporary module; AFTER is this
checkout's. Both talk to a moto S3 server on loopback that this script starts (moto's app on werkzeug,
as `python -m moto.server` runs it; --latency-ms holds each request that long first) and stops by its
own process handle: no other process is touched. Each file is uploaded by BEFORE and by AFTER to
separate keys, then read back through `open_read` by each, --repeats times with the two taking turns at
going first; the best time is shown (on a shared machine interference only adds time). MB/s =
MiB moved / wall seconds. A loopback moto server measures the client's overheads and parallelism, not a
real network: moto keeps objects in this machine's memory and assembles multipart uploads itself.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# main before issue 24's managed transfer: the hand-written S3 upload, listing and retry loop
BEFORE_REF = "47223a1d3d1746c550d1c2d4bc942c717559401c"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-access-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def load_before(ref: str, folder: Path):
    """S3Storage of `ref` as an importable module (its reader too, which it builds with its own signature)."""
    package = folder / "_s3_before"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("s3", "s3_reader"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:foundation/storage/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = source.replace("dppp.foundation.storage.s3_reader", "_s3_before.s3_reader")
        (package / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("_s3_before.s3").S3Storage
    finally:
        sys.path.remove(str(folder))


# moto's S3 app (what `python -m moto.server` serves), each request held `latency` seconds first: a stand-in
# for a network's round trip, which loopback lacks and which parts in flight at once overlap.
_SERVER_SCRIPT = r"""
import sys, time
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
latency = float(sys.argv[2])

def delayed(environ, start_response):
    if latency and not environ["PATH_INFO"].startswith("/moto-api"):
        time.sleep(latency)
    return app(environ, start_response)

run_simple("127.0.0.1", int(sys.argv[1]), delayed, threaded=True)
"""


class MotoServer:
    """moto's S3 server on a free loopback port, in a child process that only this object stops."""

    def __init__(self, latency_ms: float = 0) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT, str(port), str(latency_ms / 1000)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2).read()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def mb_per_s(size: int, seconds: float) -> float:
    return size / (1 << 20) / seconds


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def read_through(storage, key: str) -> int:
    total = 0
    with storage.open_read(key) as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    return total


def run(
    sizes_mb: list[int],
    threshold_mb: int,
    chunk_mb: int,
    before_ref: str,
    repeats: int,
    latency_ms: float = 0,
) -> list[dict]:
    from dppp.foundation.storage.config import StorageConfig
    from dppp.foundation.storage.s3 import S3Storage

    for name, value in FAKE_CREDENTIALS.items():
        os.environ[name] = value  # moto accepts any; a real key never reaches a loopback benchmark
    os.environ.pop("AWS_PROFILE", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        before_cls = load_before(before_ref, Path(tmp))
        server = MotoServer(latency_ms)
        try:
            config = StorageConfig(
                endpoint_url=server.endpoint_url,
                region="us-east-1",
                multipart_threshold_mb=threshold_mb,
                multipart_chunk_mb=chunk_mb,
            )
            import boto3

            boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1").create_bucket(
                Bucket="bench"
            )
            stores = {
                "before": before_cls("bench", "before", config),
                "after": S3Storage("bench", "after", config),
            }
            for storage in stores.values():  # each builds its client outside the timings
                storage.put_bytes(b"warm", "warm")
                assert storage.read_bytes("warm") == b"warm"
            for size_mb in sizes_mb:
                size = size_mb << 20
                source = Path(tmp) / f"{size_mb}.bin"
                source.write_bytes(os.urandom(size))
                row: dict = {
                    "size_mb": size_mb,
                    "parts": -(-size // (chunk_mb << 20)) if size > threshold_mb << 20 else 1,
                }
                # best of `repeats`, BEFORE and AFTER taking turns at going first, so that neither always finds
                # moto fresh (or busy)
                times: dict[str, list[float]] = {
                    f"{way}_{name}": [] for way in ("up", "down") for name in stores
                }
                for turn in range(repeats):
                    order = list(stores.items()) if turn % 2 == 0 else list(stores.items())[::-1]
                    for name, storage in order:
                        upload = lambda s=storage, f=source: s.put_file(f, "f.bin")  # noqa: E731
                        times[f"up_{name}"].append(timed(upload))
                        assert storage.stat("f.bin").size == size
                    for name, storage in order:
                        times[f"down_{name}"].append(timed(lambda s=storage: read_through(s, "f.bin")))
                row.update({label: mb_per_s(size, min(ts)) for label, ts in times.items()})
                for storage in stores.values():
                    storage.delete("f.bin")  # moto holds objects in memory
                source.unlink()
                rows.append(row)
        finally:
            server.stop()
    return rows


def report(rows: list[dict]) -> str:
    lines = [
        "| file | parts | upload before | upload after | ratio | download before | download after | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['size_mb']} MB | {r['parts']} | {r['up_before']:.0f} MB/s | {r['up_after']:.0f} MB/s "
            f"| {r['up_after'] / r['up_before']:.2f}x | {r['down_before']:.0f} MB/s "
            f"| {r['down_after']:.0f} MB/s | {r['down_after'] / r['down_before']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    from dppp.foundation.storage.config import StorageConfig

    defaults = StorageConfig()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 256], help="file sizes in MB")
    parser.add_argument("--threshold-mb", type=int, default=defaults.multipart_threshold_mb)
    parser.add_argument("--chunk-mb", type=int, default=defaults.multipart_chunk_mb)
    parser.add_argument("--repeats", type=int, default=3, help="timings per file and side (best)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0,
        help="hold each request this long at the server (a network's RTT)",
    )
    parser.add_argument("--before-ref", default=BEFORE_REF, help="the git commit whose S3Storage is BEFORE")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(args.sizes, args.threshold_mb, args.chunk_mb, args.before_ref, args.repeats, args.latency_ms)
    print(
        f"S3Storage on a loopback moto server: multipart above {args.threshold_mb} MB in {args.chunk_mb} MB "
        f"parts (after: {defaults.upload_concurrency} at once); before = {args.before_ref[:12]}; best of "
        f"{args.repeats}; {args.latency_ms:g} ms added to each request"
    )
    print(report(rows))
    print(f"total {time.perf_counter() - started:.0f}s")
    return rows


if __name__ == "__main__":
    main()
