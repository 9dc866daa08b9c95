"""A Ray *node* lost mid-run (its raylet and every process on it SIGKILLed), for `dppp generate` and
`dppp train`, on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: one raylet per
node, each with its own CPUs).

The head node, which the driver runs on, has no CPU, so every actor and training worker lives on a worker
node a test can remove. Ray's node failure detector is tightened (a health check every 0.5 s, dead after
3 misses) so a lost node is declared dead within seconds, as a production cluster does in about 15-30 s.
The cluster's files (its address file included) live under a private RAY_TMPDIR, so a `ray.init()`
elsewhere on this machine never finds it, and nothing here uses a fixed port.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dppp.dataset.listing import committed_shards, list_objects
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.generate import GenerationFailed, run_generate
from tests.pipeline.test_generate import gen_config, tar_digests
from tests.ray_processes import descendants_titled, process_tree

ROOT = Path(__file__).resolve().parents[2]
FAST_FAILURE_DETECTION = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
GEN = {"identities": 320, "ids_per_shard": 4}  # the recipe: 80 shards, ~8 s on two CPUs


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray._private import worker as ray_worker
    from ray.cluster_utils import Cluster

    from dppp.foundation.ray_cluster import keep_cluster_messages_off_the_terminal

    temp = tempfile.mkdtemp(prefix="dppp-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", temp)
        # as `dppp` does when it joins a cluster: the killed raylets' log tails stay out of the test log
        patch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)
        keep_cluster_messages_off_the_terminal()
        cluster = None
        try:
            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 0,
                    "include_dashboard": False,
                    "dashboard_agent_listen_port": None,
                    "_system_config": FAST_FAILURE_DETECTION,
                },
            )
            ray.init(address=cluster.address, log_to_driver=False)
            yield cluster
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def nodes(cluster):
    """add(n) worker nodes of 1 CPU each; whatever a test leaves is removed after it."""
    added = []

    def add(n: int = 1):
        new = [cluster.add_node(num_cpus=1) for _ in range(n)]
        added.extend(new)
        return new

    yield add
    for node in added:
        if node in cluster.worker_nodes:
            cluster.remove_node(node, allow_graceful=False)


def kill_node(cluster, node) -> float:
    """SIGKILL the node's raylet and every process on it, as when a machine drops; returns when."""
    cluster.remove_node(node, allow_graceful=False)
    return time.monotonic()


def nodes_hosting(cluster, marker: bytes) -> list:
    """Worker nodes of `cluster` running a process whose title holds `marker` (e.g. b"RayTrainWorker"):
    looked for below each node's raylet (Ray workers are its children), never across the machine."""
    tree = process_tree()
    return [
        node
        for node in cluster.worker_nodes
        if descendants_titled(node.all_processes["raylet"][0].process.pid, marker, tree)
    ]


def node_running(cluster, marker: bytes, timeout_s: float = 60, *, count: int = 1):
    """A worker node with a process titled `marker` (b"ShardActor.run": an actor inside a shard), once
    `count` distinct nodes run one at the same moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(found := nodes_hosting(cluster, marker)) >= count:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} node(s) of the cluster run {marker!r} at once")


def assert_each_shard_committed_once(out: Path, shards: int, summary=None) -> None:
    """One tar, fragment and record per planned shard and nothing else beside dataset.json and the index,
    every fragment agreeing with its record and tar (verify --deep); and, given the run's summary, each
    shard booked once by the driver (a lost attempt is a retry, never a second commit)."""
    from dppp.pipeline.verify import verify_dataset

    listing = list_objects(open_storage(str(out)))
    assert sorted(listing.shards) == list(range(shards))
    assert all(None not in (o.tar, o.record, o.fragment) for o in listing.shards.values())
    assert set(listing.others) == {"dataset.json", "index.parquet", "README.md", "wids-index.json"}
    report = verify_dataset(str(out), deep=True)
    assert report.ok and report.verified == shards, (report.checks[:3], report.dataset_problems)
    if summary is not None:
        assert summary.shards_done == shards and summary.shards_skipped == 0
        assert len(summary.timeline) == shards  # one commit booked per shard


def wait_for_records(out: Path, count: int, alive, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        committed = len(list((out / "shards").glob("*.json")))
        if committed >= count:
            return committed
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} shards committed under {out}")


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """A clean run of the same config on one node: the bytes every interrupted run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "dataset"
    node = cluster.add_node(num_cpus=2)
    try:
        run_generate(gen_config(out, workers=2, **GEN), progress=False)
    finally:
        cluster.remove_node(node, allow_graceful=False)
    return tar_digests(str(out))


# ------------------------------------------------------------------------------------------ generate


@pytest.mark.slow
def test_generate_lost_node_is_replaced_and_the_shards_match_a_clean_run(cluster, nodes, reference, tmp_path):
    """Two actors on two of three nodes; one of theirs dies: its shards go back to the queue, the survivor
    carries on, the replacement actor starts on the spare node; the shards equal a one-node run's."""
    nodes(3)
    out = tmp_path / "dataset"
    outcome: dict = {}
    run = threading.Thread(
        target=lambda: outcome.update(summary=run_generate(gen_config(out, workers=2, **GEN), progress=False))
    )
    run.start()
    wait_for_records(out, 3, run.is_alive)
    # both actors inside a shard at once, on two nodes (spread): a busy machine can take long to start the
    # second, and a kill before it is loaded would leave no actor at all
    doomed = node_running(cluster, b"ShardActor.run", count=2)
    kill_node(cluster, doomed)
    run.join(300)
    summary = outcome["summary"]
    assert not summary.failed and summary.stopped is None
    assert [loss.worker for loss in summary.losses] and len(summary.losses) == 1
    loss = summary.losses[0]
    assert loss.node == doomed.node_id and loss.shards >= 1 and summary.retries >= loss.shards
    after = [count for at, count in summary.pool_sizes if at >= loss.at_s]
    assert after[0] == 1 and 2 in after  # a smaller pool at once, back to two with the replacement
    assert summary.nodes_lost == [doomed.node_id]
    # spread and pinned: the two actors rendered on two nodes; the survivor only ever on its own, and
    # after the loss none of the lost worker's shards came from the dead node
    survivor = ({"worker-0", "worker-1"} - {loss.worker}).pop()
    assert len(summary.nodes[survivor]) == 1 and summary.nodes[survivor] != [doomed.node_id]
    assert doomed.node_id not in summary.nodes.get(loss.worker, [])[1:]
    assert len({node for nodes in summary.nodes.values() for node in nodes}) >= 2
    assert set().union(*summary.nodes.values()) <= {node.node_id for node in cluster.worker_nodes} | {
        doomed.node_id
    }
    assert_each_shard_committed_once(out, len(reference), summary)
    assert tar_digests(str(out)) == reference


@pytest.mark.slow
def test_generate_cli_on_a_lost_node_finishes_on_the_rest_with_a_readable_terminal(
    cluster, nodes, reference, tmp_path
):
    """The issue's recipe as a user runs it: `dppp generate --ray-address` on two nodes, one killed, no
    replacement possible. Exit 0 on the remaining node, every shard identical to a clean run, and the
    terminal shows dppp's account of it, not Ray's raylet log dumps or tracebacks."""
    nodes(2)
    out = tmp_path / "dataset"
    command = [
        sys.executable,
        "-m",
        "dppp",
        "generate",
        str(ROOT / "configs/demo.yaml"),
        "--out",
        str(out),
        "--identities",
        str(GEN["identities"]),
        "--ids-per-shard",
        str(GEN["ids_per_shard"]),
        "--workers",
        "2",
        "--ray-address",
        cluster.address,
    ]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_records(out, len(reference) // 2, lambda: driver.poll() is None)
        kill_node(cluster, node_running(cluster, b"ShardActor.run"))
        output, _ = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 0, output
    assert "worker-1 lost" in output or "worker-0 lost" in output
    assert "re-queued" in output and "shards re-run" in output
    assert "[state-dump]" not in output and "Traceback" not in output and "(raylet)" not in output
    assert_each_shard_committed_once(out, len(reference))
    assert tar_digests(str(out)) == reference


@pytest.mark.slow
def test_generate_with_no_capacity_left_stops_after_the_placement_timeout_and_a_rerun_resumes(
    cluster, nodes, reference, tmp_path
):
    """Every node holding an actor dies and no other has room: the job stops once placement_timeout_s
    has passed (exit 1, the reason given), every committed shard intact; once nodes are back, a rerun
    renders only the rest and the dataset equals a clean run's."""
    doomed = nodes(2)
    out = tmp_path / "dataset"
    # Placed means started: under load a worker process takes seconds to start, so not 1 s here.
    config = gen_config(out, workers=2, placement_timeout_s=6, **GEN)
    outcome: dict = {}

    def run():
        try:
            run_generate(config, progress=False)
        except GenerationFailed as failed:
            outcome["summary"] = failed.summary
            outcome["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    wait_for_records(out, len(reference) // 2, thread.is_alive)
    for node in doomed:
        killed_at = kill_node(cluster, node)
    thread.join(120)
    summary = outcome["summary"]
    assert (
        summary.stopped and "could be placed" in summary.stopped and "placement_timeout_s" in summary.stopped
    )
    assert {loss.worker for loss in summary.losses} == {"worker-0", "worker-1"}
    # bounded: the 6 s wait, after the losses that Ray reports once the nodes' connections drop
    assert 6 <= outcome["at"] - killed_at < 40
    committed = {r.tar for r in committed_shards(open_storage(str(out)))}
    assert 0 < len(committed) < len(reference)
    digests = tar_digests(str(out))
    assert all(digests[tar] == reference[tar] for tar in committed)

    nodes(2)
    again = run_generate(config.model_copy(update={"placement_timeout_s": 300}), progress=False)
    assert again.shards_skipped == len(committed) and again.shards_done == len(reference) - len(committed)
    assert_each_shard_committed_once(out, len(reference))
    assert tar_digests(str(out)) == reference


# ------------------------------------------------------------------------------------------ train


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> str:
    from tests.trainer.test_data import write_dataset

    return write_dataset(str(tmp_path_factory.mktemp("train-data") / "ds"), n_ids=24, ids_per_shard=3)


def kill_a_training_node_after_a_checkpoint(cluster, run: Path, alive) -> list:
    """Kill the first node hosting a training worker once a checkpoint exists; returns every node that
    hosted one at that moment (the killed one first)."""
    from tests.trainer.test_train import _registered_checkpoints

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and alive():
        if _registered_checkpoints(run):
            hosts = nodes_hosting(cluster, b"RayTrainWorker")
            if hosts:
                kill_node(cluster, hosts[0])
                return hosts
        time.sleep(0.1)
    raise AssertionError("the run ended before a node hosting a training worker could be killed")


@pytest.mark.slow
def test_train_resumes_from_the_newest_checkpoint_when_a_node_dies(cluster, nodes, train_data, tmp_path):
    """Two training workers on two of three nodes; a node hosting one dies after a checkpoint: Ray Train
    restarts the worker group on the two nodes left, from that checkpoint, and the run completes."""
    from dppp.trainer.methods.checkpoint import read_state
    from dppp.trainer.training.train import run_train
    from tests.trainer.test_train import metrics, tiny_config

    nodes(3)
    out = tmp_path / "runs"
    config = tiny_config(
        phase1={"epochs": 1}, phase2={"epochs": 3}, run_name="node", max_failures=2, placement_timeout_s=60
    )
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.update(
            result=run_train(config, [train_data], str(out), workers=2, progress=False)
        )
    )
    thread.start()
    hosts = kill_a_training_node_after_a_checkpoint(cluster, out / "node", thread.is_alive)
    assert len(hosts) == 2  # the two workers ran on two nodes (one CPU each)
    thread.join(300)
    result = outcome["result"]
    assert len(result.starts) >= 2 and result.starts[-1]["resumed"] and result.starts[-1]["step"] > 0
    assert read_state(out / "node" / "final").step == result.steps
    assert [r["epoch"] for r in metrics(out / "node") if r["kind"] == "epoch"] == [0, 0, 1, 2]


@pytest.mark.slow
def test_train_without_room_after_a_node_dies_stops_clearly_in_bounded_time(
    cluster, nodes, train_data, tmp_path, capsys
):
    """Two workers on the only two nodes; one node dies: the worker group cannot be placed again. The
    run stops with exit 1 and a message saying so once two starts have waited placement_timeout_s
    each, never hanging; the checkpoint it had stays for a rerun."""
    import yaml

    from dppp.cli import main
    from tests.trainer.test_train import _registered_checkpoints, tiny_config

    nodes(2)
    out = tmp_path / "runs"
    config = tiny_config(
        phase1={"epochs": 1}, phase2={"epochs": 6}, run_name="stuck", max_failures=2, placement_timeout_s=3
    )
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"train": config.model_dump(mode="json")}))
    outcome: dict = {}

    def cli():
        outcome["code"] = main(
            ["train", str(path), "--data", train_data, "--out", str(out), "--workers", "2"]
        )
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=cli)
    thread.start()
    kill_a_training_node_after_a_checkpoint(cluster, out / "stuck", thread.is_alive)
    killed_at = time.monotonic()
    thread.join(180)
    assert not thread.is_alive(), "dppp train hung after losing the capacity it needs"
    assert outcome["code"] == 1
    err = capsys.readouterr().err
    assert (
        "no room for 2 training worker(s)" in err and "placement_timeout_s" in err and "Traceback" not in err
    )
    assert outcome["at"] - killed_at < 60
    assert _registered_checkpoints(out / "stuck")
