"""Recovery from a lost Ray node, on a real multi-node Ray cluster on this machine (ray.cluster_utils:
one raylet per node), with Ray's default failure detection, as a user's cluster has it.

    python benchmarks/bench_node_loss.py                  # 3 repeats of each case
    python benchmarks/bench_node_loss.py --repeats 1 --part generate

generate  the issue-16 recipe (320 identities, 4 per shard, demo config): 2 actors on 1-CPU nodes, the
          node of one killed (SIGKILL of its raylet and processes) once 4 shards are committed.
            spare      a third node has room: seconds from the kill until the lost actor's shards are
                       re-queued, until the replacement actor has loaded its renderer, until the job ends;
            no-spare   no other room: the survivor finishes alone; seconds until re-queued and until the end;
            no-room    1 actor on the only node, placement_timeout_s 10: seconds until the job stops.
train     2 training workers on 3 one-CPU nodes (tests' tiny config), a node hosting one killed after
          the first checkpoint: seconds from the kill until the restarted group's first record.
The head node (the driver's) has no CPU, so every actor and worker lives on a node that can be killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):5.1f} s (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


def generate_case(cluster, base: Path, nodes: int, workers: int, timeout_s: float) -> dict[str, float | None]:
    import dppp.pipeline.generate as generate
    from dppp.foundation.actor_pool import ActorPool
    from tests.pipeline.test_generate import gen_config
    from tests.pipeline.test_node_loss import node_running, wait_for_records

    class Observed(ActorPool):  # the pool's start time turns the summary's offsets into absolute times
        last: ActorPool | None = None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            Observed.last = self

    generate.ActorPool = Observed
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    out = base / f"gen-{time.monotonic_ns()}"
    config = gen_config(out, workers=workers, identities=320, ids_per_shard=4, placement_timeout_s=timeout_s)
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = generate.run_generate(config, progress=False)
        except generate.GenerationFailed as failed:
            outcome["summary"] = failed.summary
        outcome["end"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    wait_for_records(out, 4, thread.is_alive)
    victim = node_running(cluster, b"ShardActor.run")
    killed = time.monotonic()
    cluster.remove_node(victim, allow_graceful=False)
    thread.join()
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node, allow_graceful=False)
    summary, started = outcome["summary"], Observed.last.started
    loss = summary.losses[0]
    back = [at for at, size in summary.pool_sizes if at > loss.at_s and size == workers]
    return {
        "requeued": started + loss.at_s - killed,
        "replacement": started + back[0] - killed if back else None,
        "end": outcome["end"] - killed,
        "stopped": float(summary.stopped is not None),
    }


def train_case(cluster, base: Path) -> float:
    from dppp.trainer.training.train import run_train
    from tests.pipeline.test_node_loss import node_running
    from tests.trainer.test_data import write_dataset
    from tests.trainer.test_train import _registered_checkpoints, tiny_config

    data = write_dataset(str(base / f"data-{time.monotonic_ns()}"), n_ids=24, ids_per_shard=3)
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    out = base / f"runs-{time.monotonic_ns()}"
    config = tiny_config(phase1={"epochs": 1}, phase2={"epochs": 4}, run_name="b", max_failures=2)
    thread = threading.Thread(target=lambda: run_train(config, [data], str(out), workers=2, progress=False))
    thread.start()
    while thread.is_alive() and not _registered_checkpoints(out / "b"):
        time.sleep(0.1)
    victim = node_running(cluster, b"RayTrainWorker")
    killed = time.time()
    cluster.remove_node(victim, allow_graceful=False)
    thread.join()
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node, allow_graceful=False)
    records = [json.loads(line) for line in (out / "b" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "start"][-1]["time"] - killed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["generate", "train", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # The cluster's files, its address file included, stay private: no ray.init() elsewhere finds it.
    ray_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="dppp-bench-ray-", dir="/tmp")
    import ray
    from ray.cluster_utils import Cluster

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, ray {ray.__version__}")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "dashboard_agent_listen_port": None},
    )
    ray.init(address=cluster.address, log_to_driver=False)
    base = Path(tempfile.mkdtemp(prefix="dppp-bench-node-loss-"))
    try:
        if args.part in ("generate", "all"):
            for name, nodes, workers, timeout_s in [
                ("spare", 3, 2, 300),
                ("no-spare", 2, 2, 300),
                ("no-room", 1, 1, 10),
            ]:
                runs = [generate_case(cluster, base, nodes, workers, timeout_s) for _ in range(args.repeats)]
                figures = {key: [r[key] for r in runs if r[key] is not None] for key in runs[0]}
                print(f"generate {name:8s}: shards re-queued {spread(figures['requeued'])}")
                if name == "spare":
                    print(f"{'':18s}replacement loaded {spread(figures['replacement'])}")
                print(
                    f"{'':18s}job {'stopped' if name == 'no-room' else 'ended'} {spread(figures['end'])} "
                    f"after the kill"
                )
        if args.part in ("train", "all"):
            print(
                f"train: restarted from the checkpoint {spread([train_case(cluster, base) for _ in range(args.repeats)])} "
                "after the kill"
            )
    finally:
        ray.shutdown()
        cluster.shutdown()
        for folder in (base, ray_tmp):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
