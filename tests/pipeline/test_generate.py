"""`dppp generate`: the Ray batch job, end to end on a real local Ray instance, local folders and loopback S3.

Byte-identity is checked on the tars (their sha256): the commit records also hold timings, which differ.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dppp.cli import main
from dppp.config import load_experiment
from dppp.dataset.index import build_index
from dppp.dataset.listing import committed_shards
from dppp.dataset.records import read_index
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.generate import GenerationFailed, build_plan, config_fingerprint, run_generate
from tests.ray_processes import dead, descendants_titled, this_raylet

ROOT = Path(__file__).resolve().parents[2]


def gen_config(out, **overrides):
    sets = [f"generate.out={out}"] + [f"generate.{k}={v}" for k, v in overrides.items()]
    return load_experiment(ROOT / "configs" / "demo.yaml", sets).generate


def tar_digests(url: str) -> dict[str, str]:
    storage = open_storage(url)
    return {r.tar: hashlib.sha256(storage.read_bytes(r.tar)).hexdigest() for r in committed_shards(storage)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_instance):
    """A clean 1-worker run of the small test config: the bytes every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "dataset"
    summary = run_generate(gen_config(out, identities=12, ids_per_shard=3, workers=1), progress=False)
    return out, summary


# ------------------------------------------------------------------------------------------ pure parts


def test_fingerprint_ignores_run_only_fields(tmp_path):
    base = gen_config(tmp_path / "a")
    moved = gen_config(tmp_path / "b", workers=7, max_attempts=5)
    reseeded = gen_config(tmp_path / "a", seed=1)
    assert config_fingerprint(base, "t") == config_fingerprint(moved, "t")
    assert config_fingerprint(base, "t") != config_fingerprint(reseeded, "t")
    assert config_fingerprint(base, "t") != config_fingerprint(base, "other taxonomy")


def test_plan_keeps_identities_whole(tmp_path):
    plan = build_plan(gen_config(tmp_path, identities=10, ids_per_shard=4))
    assert [s.pids for s in plan.shards] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert plan.images == sum(plan.engine.identity(p).num_views for p in range(10))


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "dataset"
    code = main(
        [
            "generate",
            str(ROOT / "configs/demo.yaml"),
            "--out",
            str(out),
            "--identities",
            "10",
            "--ids-per-shard",
            "4",
            "--dry-run",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "10 identities" in printed and "3 shards" in printed and "Nothing written" in printed
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "ftp://somewhere/data"], "ftp"),
        (["--identities", "0"], "generate.identities"),
        (["--set", "generate.renderer.kind=painting"], "generate.renderer"),
        (["--set", "generate.nonsense=1"], "unknown key"),
    ],
)
def test_bad_config_or_output_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "dataset"
    argv = ["generate", str(ROOT / "configs/demo.yaml"), "--out", str(out), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_generate_verify_and_index_local(reference, capsys):
    out, summary = reference
    assert summary.shards_done == 4 and summary.images > 0 and not summary.failed
    assert main(["shards", "verify", str(out)]) == 0
    storage = open_storage(str(out))
    records = committed_shards(storage)
    index = read_index(storage)
    assert index.num_rows == sum(r.count for r in records) == summary.images
    assert sorted(index.column("key").to_pylist()) == sorted(k for r in records for k in r.keys)
    assert set(index.column("pid").to_pylist()) == set(range(12))
    # each worker wrote its shard's index fragment; the merge of them is the index the tars give
    assert all(r.fragment is not None and r.fragment.rows == r.count for r in records)
    assert index.equals(build_index(storage))
    assert set(summary.phases) == {"plan_s", "schedule_s", "index_s"}
    assert sum(summary.phases.values()) == pytest.approx(summary.wall_s)


@pytest.mark.slow
def test_two_workers_give_byte_identical_shards(reference, tmp_path):
    out, _ = reference
    # Four times the reference's people: its shards are the first four (a shard's bytes depend only on its
    # pids), and the other twelve give the second actor time to join however late it loads on a busy
    # machine (the first one to load starts rendering at once).
    summary = run_generate(
        gen_config(tmp_path / "two", identities=48, ids_per_shard=3, workers=2), progress=False
    )
    assert len(summary.busy) == 2  # both actors rendered
    assert sorted(summary.nodes) == ["worker-0", "worker-1"] and all(
        len(n) == 1 for n in summary.nodes.values()
    )
    expected = tar_digests(str(out))
    two = tar_digests(str(tmp_path / "two"))
    assert len(two) == 16 and {name: two[name] for name in expected} == expected


@pytest.mark.slow
def test_rerun_resumes_and_another_config_is_refused(reference, tmp_path, capsys):
    out, _ = reference
    again = run_generate(gen_config(out, identities=12, ids_per_shard=3, workers=1), progress=False)
    assert again.shards_done == 0 and again.shards_skipped == 4
    argv = [
        "generate",
        str(ROOT / "configs/demo.yaml"),
        "--out",
        str(out),
        "--identities",
        "12",
        "--ids-per-shard",
        "3",
        "--set",
        "generate.seed=5",
    ]
    before = tar_digests(str(out))
    assert main(argv) == 2
    assert "another config" in capsys.readouterr().err
    assert tar_digests(str(out)) == before


@pytest.mark.slow
def test_overwrite_replaces_a_dataset_of_another_config(tmp_path, ray_instance):
    out = tmp_path / "dataset"
    run_generate(gen_config(out, identities=4, ids_per_shard=2, workers=1), progress=False)
    first = tar_digests(str(out))
    config = gen_config(out, identities=4, ids_per_shard=2, workers=1, seed=9)
    summary = run_generate(config, overwrite=True, progress=False)
    assert summary.shards_done == 2
    assert tar_digests(str(out)).keys() == first.keys() and tar_digests(str(out)) != first


@pytest.mark.slow
def test_generate_to_loopback_s3(reference, moto_s3):
    url = moto_s3.bucket("gen") + "/datasets/demo"
    summary = run_generate(gen_config(url, identities=12, ids_per_shard=3, workers=2), progress=False)
    assert summary.shards_done == 4
    assert main(["shards", "verify", url]) == 0
    assert read_index(open_storage(url)).num_rows == summary.images
    assert tar_digests(url) == tar_digests(str(reference[0]))


@pytest.mark.slow
def test_failing_shard_is_reported_after_bounded_attempts(tmp_path, ray_instance, capsys):
    out = tmp_path / "dataset"
    # A directory squatting on shard 1's tar name makes every publish of that shard fail for real.
    (out / "shards" / "shard-000001.tar").mkdir(parents=True)
    config = gen_config(out, identities=6, ids_per_shard=2, workers=2, max_attempts=2)
    with pytest.raises(GenerationFailed) as info:
        run_generate(config, progress=False)
    summary = info.value.summary
    assert list(summary.failed) == [1] and summary.retries == 1
    assert sorted(r.index for r in committed_shards(open_storage(str(out)))) == [0, 2]
    assert main(["shards", "verify", str(out)]) == 1  # the squatter is reported, the good shards verify
    capsys.readouterr()
    # The CLI reruns only shard 1, which fails again: it prints why and exits with GenerationFailed's code.
    assert (
        main(
            [
                "generate",
                str(ROOT / "configs/demo.yaml"),
                "--out",
                str(out),
                "--identities",
                "6",
                "--ids-per-shard",
                "2",
                "--workers",
                "2",
                "--set",
                "generate.max_attempts=2",
            ]
        )
        == 1
    )
    printed = capsys.readouterr().out
    assert "1 shard(s) failed every attempt" in printed and "shard 000001" in printed


@pytest.mark.slow
def test_no_node_can_hold_an_actor_stops_after_the_placement_timeout(tmp_path, ray_instance, capsys):
    """Actors asking for more CPUs than any node has are never placed: the job stops with exit 1 once
    placement_timeout_s has passed, saying why, instead of waiting forever (docs/reliability.md)."""
    out = tmp_path / "dataset"
    argv = [
        "generate",
        str(ROOT / "configs/demo.yaml"),
        "--out",
        str(out),
        "--identities",
        "4",
        "--ids-per-shard",
        "2",
        "--set",
        "generate.cpus_per_worker=64",
        "--set",
        "generate.placement_timeout_s=1",
    ]
    assert main(argv) == 1  # it returns: the 1 s placement timeout stopped it (asserted below)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "stopped:" in printed and "could be placed" in printed and "1 s" in printed
    assert "2 shard(s) not rendered" in printed and "Traceback" not in printed
    assert committed_shards(open_storage(str(out))) == []


@pytest.mark.slow
def test_a_renderer_that_cannot_load_stops_the_job_with_its_error(tmp_path, ray_instance):
    """Each actor's start is tried max_attempts times, then its slot is given up; with none left the job
    stops with the renderer's own error (here a model folder that is not there), nothing committed."""
    out = tmp_path / "dataset"
    config = gen_config(
        out,
        identities=4,
        ids_per_shard=2,
        workers=1,
        max_attempts=2,
        **{"renderer.kind": "diffusers", "renderer.model": str(tmp_path / "no-model")},
    )
    with pytest.raises(GenerationFailed) as info:
        run_generate(config, progress=False)
    summary = info.value.summary
    assert summary.stopped and "failed to start (2 tries each)" in summary.stopped
    assert "no-model" in summary.stopped and "does not exist" in summary.stopped
    assert summary.shards_done == 0 and not summary.failed
    assert committed_shards(open_storage(str(out))) == []


@pytest.mark.slow
def test_actor_killed_mid_shard_is_replaced(reference, tmp_path, foreign_ray_processes):
    """One of this run's actors is SIGKILLed inside a shard: found below this Ray instance's raylet, never
    by its title across the machine (another job's processes, named alike, run beside it and survive)."""
    out = tmp_path / "killed"
    config = gen_config(out, identities=12, ids_per_shard=3, workers=2)
    raylet = this_raylet()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=run_generate(config, progress=False)))
    thread.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and thread.is_alive() and time.time() < deadline:
        busy = descendants_titled(raylet, b"ShardActor.run")
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.01)
    thread.join(timeout=300)
    assert killed is not None, "no actor was caught inside a shard"
    summary = result["summary"]
    assert summary.retries >= 1 and not summary.failed
    assert tar_digests(str(out)) == tar_digests(str(reference[0]))
    assert not dead(foreign_ray_processes), "another job's processes were killed"
    # a shard it was writing is removed by the worker that replaced it (pipeline/worker.py)
    assert not list(Path(tempfile.gettempdir()).glob(f"dppp-shard-{killed}-*"))


@pytest.mark.slow
def test_driver_killed_mid_run_then_rerun_is_byte_identical(tmp_path, ray_instance):
    args = ["--identities", "40", "--ids-per-shard", "2", "--workers", "1"]
    clean = tmp_path / "clean"
    run_generate(gen_config(clean, identities=40, ids_per_shard=2, workers=1), progress=False)

    out = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "dppp",
        "generate",
        str(ROOT / "configs/demo.yaml"),
        "--out",
        str(out),
        *args,
    ]
    driver = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            if len(list((out / "shards").glob("*.json"))) >= 2:
                break
            time.sleep(0.02)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray instance it started
        driver.wait()
    committed = len(list((out / "shards").glob("*.json")))
    assert 0 < committed < 20, f"kill landed outside the run ({committed} of 20 shards committed)"

    summary = run_generate(gen_config(out, identities=40, ids_per_shard=2, workers=1), progress=False)
    assert summary.shards_skipped >= committed
    assert tar_digests(str(out)) == tar_digests(str(clean))
