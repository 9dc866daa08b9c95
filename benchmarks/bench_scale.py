"""The driver's cost against dataset size: `dppp generate`'s plan, scheduling and final index, and `dppp
shards verify` / the listing, for 1k to 100k shards (issue 15).

    python benchmarks/bench_scale.py                                     # every part, default sizes
    python benchmarks/bench_scale.py --part local --shards 1000 10000    # real runs to a local folder
    python benchmarks/bench_scale.py --part s3 --shards 10000            # real run to the loopback S3 endpoint
    python benchmarks/bench_scale.py --part sim --shards 1000 10000 100000

Renderer: the procedural one at its smallest (32x16 drawing, no weather or degradation, 16x8 JPEG) and
one identity of 2 views per shard, so a shard costs its actor a few milliseconds and what grows with the
shard count is the driver's share.

local, s3  a real `dppp generate` (`run_generate`, 2 actors on a local Ray instance) to a local folder or
           to moto's S3 server in a child process (as tests/conftest.py starts it); then, on the dataset it
           made: the index merge again through a storage that counts what the driver reads, `shards
           verify`, and the listing alone.
sim        the same driver steps at sizes a real run cannot reach on 2 shared cores, honestly apart: the
           plan (real, `build_plan` + `prepare_output` + the committed listing); scheduling through the
           real driver loop (`_drain`, `ActorPool`) on 2 Ray actors that answer each shard at once (no
           rendering, no writing: only the driver and Ray's task round trip are measured); and a dataset
           written beforehand, outside the measurement, by the real worker's `publish` (real shard writer,
           fragment and record; a fixed 16x8 JPEG for every image, no Ray, fsync skipped) on which the real
           index merge, verify and listing run.

Each size runs in a fresh child process, so its peak RSS (VmHWM, reset between steps through
/proc/self/clear_refs) is that driver's alone. Per-phase peaks of a generate run are sampled every 10 ms.
The last lines fit time and memory as a + b x shards (least squares) and give b per shard.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------- memory


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM (the peak RSS) to the current RSS: the next step's peak is its own."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


class Sampler(threading.Thread):
    """RSS every `period_s`, to attribute peaks to the phases of one call."""

    def __init__(self, period_s: float = 0.01):
        super().__init__(daemon=True)
        self.period_s, self.samples, self.running = period_s, [], True

    def run(self) -> None:
        while self.running:
            self.samples.append((time.perf_counter(), rss_mb()))
            time.sleep(self.period_s)

    def peak(self, start: float, end: float) -> float:
        return max((mb for at, mb in self.samples if start <= at <= end), default=float("nan"))


def measured(fn):
    """(fn(), wall seconds, peak RSS MB during it)."""
    reset_peak()
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started, rss_mb("VmHWM")


# ------------------------------------------------------------------------------------------- config


def scale_config(out: str, shards: int):
    from dppp.config import load_experiment

    sets = [
        f"generate.out={out}",
        f"generate.identities={shards}",
        "generate.ids_per_shard=1",
        "generate.workers=2",
        "generate.prompts.views.distribution=fixed",
        "generate.prompts.views.mean=2",
        "generate.prompts.views.min=2",
        "generate.renderer.height=32",
        "generate.renderer.width=16",
        "generate.renderer.weather=false",
        "generate.renderer.degradation=false",
        "generate.output.height=16",
        "generate.output.width=8",
    ]
    return load_experiment(ROOT / "configs" / "demo.yaml", sets).generate


def counting(storage):
    """The same storage, counting the bytes and the objects (by kind) the caller reads."""
    base = type(storage)

    class Counting(base):
        def read_bytes(self, key):
            data = super().read_bytes(key)
            self.counted["bytes"] += len(data)
            return data

        def open_read(self, key):
            kind = key.rsplit(".", 1)[-1]
            self.counted[kind] = self.counted.get(kind, 0) + 1
            return super().open_read(key)

    storage.__class__ = Counting
    storage.counted = {"bytes": 0}
    return storage


def child_list(url: str) -> dict:
    from dppp.dataset.listing import list_objects, plan_hint
    from dppp.foundation.storage.urls import open_storage

    storage = open_storage(url)
    hint = plan_hint(storage)
    start_rss = rss_mb()
    listing, list_s, list_rss = measured(lambda: list_objects(storage, shards_hint=hint))
    tar_bytes = sum(o.tar or 0 for o in listing.shards.values())
    record_bytes = sum(o.record or 0 for o in listing.shards.values())
    fragment_bytes = sum(o.fragment or 0 for o in listing.shards.values())
    return {
        "list_s": list_s,
        "list_rss": list_rss,
        "list_start_rss": start_rss,
        "tar_bytes": tar_bytes,
        "record_bytes": record_bytes,
        "fragment_bytes": fragment_bytes,
        "dataset_bytes": tar_bytes + record_bytes + fragment_bytes + sum(listing.others.values()),
    }


def child_merge(url: str) -> dict:
    """The index merge, through a storage that counts what it reads."""
    import pyarrow.parquet  # noqa: F401  (imported before the start figure, as a driver has it)

    from dppp.dataset.index import write_index
    from dppp.dataset.listing import plan_hint
    from dppp.foundation.storage.urls import open_storage

    storage = counting(open_storage(url))
    hint = plan_hint(storage)
    storage.counted = {"bytes": 0}
    start_rss = rss_mb()
    rows, merge_s, merge_rss = measured(lambda: write_index(storage, shards_hint=hint))
    read = dict(storage.counted)
    return {
        "rows": rows,
        "merge_s": merge_s,
        "merge_rss": merge_rss,
        "merge_start_rss": start_rss,
        "merge_read_bytes": read.pop("bytes"),
        "merge_tars_opened": read.get("tar", 0),
        "merge_objects_read": read,
        "index_bytes": storage.stat("index.parquet").size,
    }


def child_verify(url: str) -> dict:
    import pyarrow.parquet  # noqa: F401

    from dppp.pipeline.verify import verify_dataset

    start_rss = rss_mb()
    report, verify_s, verify_rss = measured(lambda: verify_dataset(url))
    assert report.ok, (report.checks[:3], report.dataset_problems, report.notes)
    return {
        "verify_s": verify_s,
        "verify_rss": verify_rss,
        "verify_start_rss": start_rss,
        "verified": report.verified,
    }


# ------------------------------------------------------------------------------------------ children


def child_generate(shards: int, url: str) -> dict:
    import ray

    from dppp.pipeline.generate import run_generate

    config = scale_config(url, shards)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    sampler = Sampler()
    sampler.start()
    reset_peak()
    started = time.perf_counter()
    summary = run_generate(config, progress=False)
    peak = rss_mb("VmHWM")
    sampler.running = False
    plan_end = started + summary.phases["plan_s"]
    schedule_end = plan_end + summary.phases["schedule_s"]
    ray.shutdown()
    return {
        "shards": shards,
        "images": summary.images,
        "wall_s": summary.wall_s,
        **summary.phases,
        "plan_rss": sampler.peak(started, plan_end),
        "schedule_rss": sampler.peak(plan_end, schedule_end),
        "index_rss": sampler.peak(schedule_end, time.perf_counter()),
        "generate_peak_rss": peak,
        "driver_cpu_s": time.process_time(),
    }


def fabricate(args: tuple[str, int, list[int]]) -> int:
    """Write the given shards of the plan with the real worker's publish (fixed image, no fsync)."""
    url, shards, indices = args
    os.fsync = lambda fd: None  # this process only: the dataset is the input here, not what is measured
    from dppp.dataset.keys import sample_key
    from dppp.dataset.shard_writer import Sample
    from dppp.pipeline.generate import build_plan
    from dppp.pipeline.worker import ShardWorker

    config = scale_config(url, shards)
    plan = build_plan(config)
    worker = ShardWorker(config, name="fabricate")  # threads=None: no torch import, none is needed
    jpeg = worker.render(plan.shards[0])[0].image_bytes  # one real 16x8 render, reused for every image
    for index in indices:
        shard = plan.shards[index]
        samples = [
            Sample(
                sample_key(view.pid, view.view),
                jpeg,
                "jpg",
                worker.metadata(view, attempts=1),
                view.prompt,
                view.pid,
            )
            for view in worker.views(shard)
        ]
        worker.publish(shard, samples)
    return len(indices)


def child_sim(shards: int, url: str) -> dict:
    """The plan on the pre-written dataset (everything committed), then the scheduling of every shard on
    2 null actors through the real driver loop."""
    import ray
    from bench_generate import sleep_pool

    from dppp.dataset.listing import committed_indices
    from dppp.pipeline.generate import GenerateSummary, _drain, build_plan, prepare_output

    config = scale_config(url, shards)

    def plan_step():
        plan = build_plan(config)
        storage = prepare_output(plan, overwrite=False)
        done = committed_indices(storage, shards_hint=len(plan.shards))
        return plan, done

    start_rss = rss_mb()
    (plan, done), plan_s, plan_rss = measured(plan_step)
    assert len(done) == shards
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = sleep_pool(2, 0.0)
    summary = GenerateSummary(url, shards, 0, 0, 0, 0, 0.0)
    cpu = time.process_time()
    # every shard scheduled, as a first run has it (this dataset is written already)
    _, schedule_s, schedule_rss = measured(lambda: _drain(pool, list(plan.shards), 3, summary, False))
    cpu = time.process_time() - cpu
    assert summary.shards_done == shards, summary.failed
    pool.shutdown()
    ray.shutdown()
    return {
        "shards": shards,
        "images": plan.images,
        "plan_s": plan_s,
        "plan_rss": plan_rss,
        "plan_start_rss": start_rss,
        "schedule_s": schedule_s,
        "schedule_rss": schedule_rss,
        "schedule_cpu_s": cpu,
    }


def write_sim_dataset(url: str, shards: int) -> tuple[float, int]:
    """The simulated part's dataset, in 2 processes: the shards missing any of their objects (all of them
    in a new folder; a kept one, --keep, is only completed). Returns (seconds, shards written): not a
    driver figure."""
    import multiprocessing

    from dppp.dataset.listing import list_objects
    from dppp.pipeline.generate import build_plan, prepare_output

    config = scale_config(url, shards)
    storage = prepare_output(build_plan(config), overwrite=False)
    present = list_objects(storage).shards
    todo = [i for i in range(shards) if None in (getattr(present.get(i), slot, None) for slot in SLOTS)]
    started = time.perf_counter()
    step = max(1, shards // 40)
    chunks = [(url, shards, todo[i : i + step]) for i in range(0, len(todo), step)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = sum(pool.imap_unordered(fabricate, chunks))
    assert done == len(todo)
    return time.perf_counter() - started, done


SLOTS = ("tar", "record", "fragment")


PROBE_COPIES = 100
PROBE_DISTINCT = 4


def child_shard_probe(url: str) -> dict:
    """GenePerson-sized shards (configs/geneperson.yaml's shape: 32 identities of ~19.65 views, 256x128
    JPEG q90) drawn by the procedural renderer at its full size: what a tar, fragment and record weigh,
    what verify spends on one, the index's bytes per row over PROBE_DISTINCT distinct shards, and the
    merge's time per shard of this size (their records and fragments committed again under PROBE_COPIES
    indices: the merge reads no tar, so the copies need none; copies compress as repeats, so the index
    size comes from the distinct shards alone)."""
    from dppp.config import load_experiment
    from dppp.dataset.format import fragment_name, record_name, shard_name
    from dppp.dataset.index import decode_fragment, encode_fragment, fragment_ref, write_index
    from dppp.foundation.storage.urls import open_storage
    from dppp.pipeline.plan import ShardPlan
    from dppp.pipeline.verify import verify_dataset
    from dppp.pipeline.worker import ShardWorker

    sets = [
        f"generate.out={url}",
        f"generate.identities={32 * PROBE_DISTINCT}",
        "generate.ids_per_shard=32",
        "generate.prompts.views.mean=19.65",
        "generate.prompts.views.max=60",
    ]
    config = load_experiment(ROOT / "configs" / "demo.yaml", sets).generate
    worker = ShardWorker(config, name="probe")
    records = []
    for index in range(PROBE_DISTINCT):
        pids = tuple(range(32 * index, 32 * index + 32))
        plan = ShardPlan(index, pids, sum(len(worker.engine.views(pid)) for pid in pids))
        records.append(worker.publish(plan, worker.render(plan)))
    storage = open_storage(url)
    _, verify_s, _ = measured(lambda: verify_dataset(url))
    distinct_rows = write_index(storage)
    record = records[0]
    one = {
        "images": record.count,
        "tar_bytes": record.bytes,
        "fragment_bytes": record.fragment.bytes,
        "record_bytes": storage.stat(record_name(0)).size,
        "verify_s_per_shard": verify_s / PROBE_DISTINCT,
        "fragment_bytes_per_row": sum(r.fragment.bytes for r in records) / distinct_rows,
        "index_bytes_per_row": storage.stat("index.parquet").size / distinct_rows,
    }
    tables = [decode_fragment(storage.read_bytes(fragment_name(i)), "probe") for i in range(PROBE_DISTINCT)]
    for index in range(PROBE_DISTINCT, PROBE_COPIES):
        source = records[index % PROBE_DISTINCT]
        table = tables[index % PROBE_DISTINCT]
        copy = table.set_column(1, "shard", pa_int32([index] * table.num_rows))
        data = encode_fragment(copy)
        storage.put_bytes(data, fragment_name(index))
        again = source.model_copy(
            update={"index": index, "tar": shard_name(index), "fragment": fragment_ref(index, data, copy)}
        )
        storage.put_bytes(again.to_json(), record_name(index))
    start_rss = rss_mb()
    rows, merge_s, merge_rss = measured(lambda: write_index(storage))
    return {
        **one,
        "copies": PROBE_COPIES,
        "rows": rows,
        "merge_s": merge_s,
        "merge_rss": merge_rss,
        "merge_start_rss": start_rss,
        "merge_s_per_shard": merge_s / PROBE_COPIES,
    }


def pa_int32(values):
    import pyarrow as pa

    return pa.array(values, pa.int32())


# -------------------------------------------------------------------------------------------- parent

CHILDREN = {"generate": child_generate, "sim": child_sim}
STEPS = {"list": child_list, "merge": child_merge, "verify": child_verify, "probe": child_shard_probe}


def run_child(mode: str, shards: int, url: str, env: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(shards), url]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {shards}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_size(part: str, shards: int, url: str, env: dict | None = None) -> dict:
    """One size: the driver run (real or simulated), then list, merge and verify, each in its own process."""
    result = run_child("sim" if part == "sim" else "generate", shards, url, env)
    for step in ("list", "merge", "verify"):
        result.update(run_child(step, shards, url, env))
    return result


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


COLUMNS = [
    ("plan_s", "plan s", "{:.2f}"),
    ("plan_rss", "plan MB", "{:.0f}"),
    ("schedule_s", "sched s", "{:.1f}"),
    ("schedule_rss", "sched MB", "{:.0f}"),
    ("index_s", "index s (run)", "{:.2f}"),
    ("generate_peak_rss", "run peak MB", "{:.0f}"),
    ("list_s", "list s", "{:.2f}"),
    ("list_rss", "list MB", "{:.0f}"),
    ("merge_s", "merge s", "{:.2f}"),
    ("merge_rss", "merge MB", "{:.0f}"),
    ("merge_read_bytes", "merge read MB", "{:.2f}"),
    ("merge_tars_opened", "tars read", "{}"),
    ("dataset_bytes", "dataset MB", "{:.1f}"),
    ("index_bytes", "index MB", "{:.2f}"),
    ("verify_s", "verify s", "{:.1f}"),
    ("verify_rss", "verify MB", "{:.0f}"),
]
MB_FIELDS = {"merge_read_bytes", "dataset_bytes", "index_bytes"}
NOT_FITTED = {"merge_tars_opened"}


def print_table(title: str, results: list[dict]) -> None:
    print(f"\n{title}")
    cols = [c for c in COLUMNS if any(c[0] in r for r in results)]
    print("| shards | " + " | ".join(label for _, label, _ in cols) + " |")
    print("| ---: | " + " | ".join("---:" for _ in cols) + " |")
    for r in results:
        cells = [
            ("-" if r.get(key) is None else fmt.format(r[key] / 1e6 if key in MB_FIELDS else r[key]))
            for key, _, fmt in cols
        ]
        print(f"| {r['shards']:,} | " + " | ".join(cells) + " |")
    if len(results) < 2:
        return
    xs = [r["shards"] for r in results]
    for key, label, _ in cols:
        if all(key in r for r in results) and key not in NOT_FITTED:
            a, b = fit(xs, [r[key] / (1e6 if key in MB_FIELDS else 1) for r in results])
            unit, per = ("MB", "kB") if "MB" in label else ("s", "ms")
            print(f"  fit {label:14s}: {a:9.3f} {unit} + {b * 1e3:8.4f} {per}/shard")
    for key in ("generate_peak_rss", "plan_rss", "schedule_rss", "list_rss", "merge_rss", "verify_rss"):
        if all(key in r for r in results):
            print(
                f"  {key}: {results[-1][key]:.0f} MB at {xs[-1]:,} shards / {results[0][key]:.0f} MB at "
                f"{xs[0]:,} = {results[-1][key] / results[0][key]:.2f}x (aim <= 2x)"
            )
    for key in ("schedule_s", "merge_s", "verify_s", "list_s"):
        if all(key in r for r in results):
            print(
                f"  {key} per shard: "
                + ", ".join(f"{r[key] / r['shards'] * 1e3:.3f} ms at {r['shards']:,}" for r in results)
            )
    for r in results:
        if "merge_read_bytes" in r:
            print(
                f"  {r['shards']:,} shards: the merge read {r['merge_read_bytes'] / 1e6:.2f} MB "
                f"({r['merge_objects_read']}) of a {r['dataset_bytes'] / 1e6:.1f} MB dataset "
                f"({r['merge_read_bytes'] / r['dataset_bytes']:.3f}); tars opened: {r['merge_tars_opened']}"
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, shards, url = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        result = CHILDREN[mode](shards, url) if mode in CHILDREN else STEPS[mode](url)
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["probe", "local", "s3", "sim", "all"], default="all")
    parser.add_argument(
        "--shards", type=int, nargs="+", help="sizes (defaults: local 1k 10k, s3 10k, sim 1k 10k 100k)"
    )
    parser.add_argument("--scratch", default=None, help="folder for the datasets (default: a temporary one)")
    parser.add_argument(
        "--keep",
        default=None,
        help="folder for the sim part's datasets, kept and reused "
        "(writing 100k shards takes half an hour on a busy 2-core machine)",
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load {os.getloadavg()}")
    parts = ["probe", "local", "s3", "sim"] if args.part == "all" else [args.part]
    defaults = {"local": [1000, 10000], "s3": [10000], "sim": [1000, 10000, 100000]}
    with tempfile.TemporaryDirectory(prefix="dppp-scale-", dir=args.scratch) as tmp:
        for part in parts:
            if part == "probe":
                probe = run_child("probe", 0, f"{tmp}/probe")
                print(
                    f"GenePerson-sized shard: {json.dumps(probe)}; fragment + record = "
                    f"{(probe['fragment_bytes'] + probe['record_bytes']) / probe['tar_bytes']:.4f} of the tar; "
                    f"merge {probe['merge_s_per_shard'] * 1e3:.1f} ms per shard of {probe['images']} images; "
                    f"index {probe['index_bytes_per_row']:.1f} bytes per row"
                )
                continue
            results = []
            for shards in args.shards or defaults[part]:
                started = time.perf_counter()
                if part == "local":
                    results.append(measure_size(part, shards, f"{tmp}/local-{shards}"))
                elif part == "sim":
                    url = f"{args.keep or tmp}/sim-{shards}"
                    written, count = write_sim_dataset(url, shards)
                    print(
                        f"  sim {shards:,}: {count:,} shards written beforehand in {written:.0f} s "
                        "(not a driver figure)"
                    )
                    results.append(measure_size(part, shards, url))
                else:
                    results.append(s3_run(shards))
                print(
                    f"  {part} {shards:,} shards: {time.perf_counter() - started:.0f} s, load "
                    f"{os.getloadavg()[0]:.1f}; {json.dumps(results[-1])}",
                    flush=True,
                )
            print_table(f"{part}: driver figures (load average now {os.getloadavg()[0]:.1f})", results)


def s3_run(shards: int) -> dict:
    from tests.conftest import FAKE_CREDENTIALS, MotoS3

    server = MotoS3()
    try:
        env = {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": server.endpoint_url}
        os.environ.update(env)
        url = server.bucket("scale") + "/ds"
        return measure_size("s3", shards, url, env)
    finally:
        server.close()


if __name__ == "__main__":
    main()
