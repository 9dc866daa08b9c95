"""`dppp generate` efficiency, worker scaling and driver scheduling overhead.

    python benchmarks/bench_generate.py                      # all three parts
    python benchmarks/bench_generate.py --part scheduling    # one part

efficiency  images/s of `dppp generate` with one worker against the renderer alone in a plain loop on
            the same views (tiny diffusion pipeline, one torch thread each). The steady rate is images
            committed between the first and the last shard commit over that time, so the fixed start-up
            cost (actor start, model load, first shard) is reported apart.
scaling     steady-state images/s with 2 workers against 1, same method.
scheduling  1,000 shards (and 250 / 500 / 2,000) on 16 actors whose work is a fixed sleep: the driver's
            overhead per shard = (wall - ideal) / shards, where ideal = shards x sleep / actors.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402


def tiny_config(model_dir: str, out: str, identities: int, workers: int):
    from dppp.config import load_experiment

    sets = [
        f"generate.renderer.model={model_dir}",
        f"generate.out={out}",
        f"generate.identities={identities}",
        "generate.ids_per_shard=2",
        f"generate.workers={workers}",
    ]
    return load_experiment(ROOT / "configs" / "tiny-diffusion.yaml", sets).generate


def steady_rate(model_dir: str, tmp: str, identities: int, workers: int) -> tuple[float, float]:
    """(steady images/s between the first and the last shard commit, seconds until the first commit)."""
    from dppp.pipeline.generate import run_generate

    config = tiny_config(model_dir, f"{tmp}/w{workers}", identities, workers)
    summary = run_generate(config, progress=False)
    return summary.steady_images_per_s(), summary.timeline[0][0]


def plain_loop_rate(model_dir: str, identities: int) -> float:
    """The renderer alone: same views, same batches, one thread, no Ray, no encoding, no storage."""
    import torch

    from dppp.pipeline.prompting import prompt_engine
    from dppp.pipeline.renderers.registry import load_renderer

    torch.set_num_threads(1)
    config = tiny_config(model_dir, "unused", identities, 1)
    engine = prompt_engine(config)
    renderer = load_renderer(config.renderer)
    batch = config.renderer.batch_size
    views = [v for pid in range(identities) for v in engine.views(pid)]
    renderer.render(views[:batch])  # warm-up, like the actor's first batch

    def render_all():
        for shard_start in range(0, identities, 2):  # the same per-shard batch cuts as the worker
            shard = [
                v for pid in range(shard_start, min(shard_start + 2, identities)) for v in engine.views(pid)
            ]
            for i in range(0, len(shard), batch):
                renderer.render(shard[i : i + batch])

    return len(views) / timed(render_all).wall_s


def part_efficiency_and_scaling(identities: int, parts: set[str]) -> None:
    import ray

    from dppp.pipeline.renderers.tiny_diffusion import build_tiny_diffusion

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = f"{tmp}/tiny-diffusion"
        build_tiny_diffusion(model_dir)
        init_s = timed(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)).wall_s
        print(f"ray.init (local instance): {init_s:.1f} s (fixed, once per job)")
        one_rate, one_fixed = steady_rate(model_dir, tmp, identities, 1)
        if "efficiency" in parts:
            loop = plain_loop_rate(model_dir, identities)
            print(
                f"efficiency: renderer alone {loop:.2f} img/s; dppp generate 1 worker {one_rate:.2f} img/s "
                f"steady -> ratio {one_rate / loop:.2f} (aim >= 0.9); first shard committed after {one_fixed:.1f} s"
            )
        if "scaling" in parts:
            two_rate, two_fixed = steady_rate(model_dir, tmp, identities, 2)
            print(
                f"scaling: 1 worker {one_rate:.2f} img/s, 2 workers {two_rate:.2f} img/s -> "
                f"{two_rate / one_rate:.2f}x (aim >= 1.7x); first shard committed after {two_fixed:.1f} s"
            )
        ray.shutdown()


@dataclass
class _Record:
    count: int
    bytes: int


@dataclass
class _Result:
    record: _Record
    render_s: float
    worker: str
    node: str = ""


class SleepWorker:
    """Stands in for ShardWorker: `run` only sleeps, so the wall time left over is the driver's."""

    def __init__(self, name: str, sleep_s: float):
        import threading

        self.name, self.sleep_s = name, sleep_s
        self._render_lock = threading.Lock()  # like ShardWorker: one shard renders at a time

    def load(self) -> str:  # what dppp.foundation.actor_pool asks of an actor
        import ray

        return ray.get_runtime_context().get_node_id()

    def run(self, shard) -> _Result:
        with self._render_lock:
            time.sleep(self.sleep_s)
        return _Result(_Record(shard.num_images, 0), self.sleep_s, self.name)


def sleep_pool(size: int, sleep_s: float):
    """The real ActorPool of SleepWorkers, every one loaded before any timing starts."""
    import ray

    from dppp.foundation.actor_pool import ActorPool

    cls = ray.remote(num_cpus=0, max_concurrency=2)(SleepWorker)
    pool = ActorPool(lambda name: cls.remote(name, sleep_s), size, placement_timeout_s=60, max_starts=1)
    while pool.probes():
        pool.settle(ray.wait(pool.probes(), num_returns=1)[0][0])
    assert len(pool.ready()) == size, pool.last_start_error
    return pool


def part_scheduling(actors: int, sleep_s: float, sizes: list[int]) -> None:
    import ray

    from dppp.pipeline.generate import GenerateSummary, _drain
    from dppp.pipeline.plan import ShardPlan

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = sleep_pool(actors, sleep_s)
    print(f"scheduling: {actors} actors, each shard sleeps {sleep_s * 1000:.0f} ms")
    for shards in sizes:
        plan = [ShardPlan(i, (i,), 10) for i in range(shards)]
        summary = GenerateSummary("bench", shards, 0, 0, 0, 0, 0.0)
        _, wall, cpu = timed(partial(_drain, pool, plan, 3, summary, progress=False))
        ideal = shards * sleep_s / actors
        print(
            f"  {shards:5d} shards: wall {wall:6.2f} s, ideal {ideal:6.2f} s -> driver overhead "
            f"{(wall - ideal) / shards * 1000:5.2f} ms/shard of wall (aim <= 20 ms), "
            f"driver CPU {cpu / shards * 1000:5.2f} ms/shard"
        )
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["efficiency", "scaling", "scheduling", "all"], default="all")
    parser.add_argument("--identities", type=int, default=24, help="identities per generate run")
    parser.add_argument("--actors", type=int, default=16)
    parser.add_argument("--sleep-ms", type=float, default=50.0)
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    parts = {"efficiency", "scaling", "scheduling"} if args.part == "all" else {args.part}
    if parts & {"efficiency", "scaling"}:
        part_efficiency_and_scaling(args.identities, parts)
    if "scheduling" in parts:
        part_scheduling(args.actors, args.sleep_ms / 1000, [250, 500, 1000, 2000])


if __name__ == "__main__":
    main()
