"""A dataset's life after its first run: several jobs on one output (shard leases), a concurrent
--overwrite, a dead job's leases, --repair and --extend. Every run is a real `dppp generate` on the local
Ray fixture (the two concurrent jobs are driver processes of their own joining it); every result is held
against the bytes of a clean run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dppp.cli import main
from dppp.config import load_experiment
from dppp.dataset.listing import committed_shards
from dppp.dataset.records import read_index
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.generate import run_generate
from dppp.pipeline.leases import JobIdentity, Leases

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/demo.yaml")


def gen_config(out, **overrides):
    sets = [f"generate.out={out}"] + [f"generate.{k}={v}" for k, v in overrides.items()]
    return load_experiment(ROOT / "configs" / "demo.yaml", sets).generate


def tar_digests(url) -> dict[str, str]:
    storage = open_storage(str(url))
    return {r.tar: hashlib.sha256(storage.read_bytes(r.tar)).hexdigest() for r in committed_shards(storage)}


def driver(out, *args: str) -> subprocess.Popen:
    """`dppp generate` in a process of its own, joining the fixture's Ray instance."""
    import ray

    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    command = [sys.executable, "-m", "dppp", "generate", CONFIG, "--out", str(out), *args]
    command += ["--ray-address", ray.get_runtime_context().gcs_address]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def shard_counts(printed: str) -> tuple[int, int, int]:
    """(rendered, done by other jobs, already committed) from a job's summary."""
    found = re.search(r"(\d+) rendered, (\d+) done by other jobs, (\d+) already committed", printed)
    assert found, printed
    return tuple(int(n) for n in found.groups())


def wait_for_lease(out: Path, job: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not list((out / "shards").glob("*.lease")):
        assert job.poll() is None and time.time() < deadline, "the job held no lease while running"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def wide_summaries(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps the summary table at the terminal's width


@pytest.fixture(scope="module")
def clean(tmp_path_factory, ray_instance):
    """One clean run of 20 shards: the bytes the shared runs must give."""
    out = tmp_path_factory.mktemp("clean") / "dataset"
    run_generate(gen_config(out, identities=40, ids_per_shard=2, workers=1), progress=False)
    return tar_digests(out)


ARGS = ["--identities", "40", "--ids-per-shard", "2", "--workers", "1"]


@pytest.mark.slow
def test_two_jobs_split_the_plan_and_render_each_shard_once(clean, tmp_path):
    out = tmp_path / "shared"
    jobs = [driver(out, *ARGS) for _ in range(2)]
    printed = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], printed
    counts = [shard_counts(text) for text in printed]
    print(f"(rendered, done by the other job, already committed) per job: {counts}")  # how they split
    assert sum(rendered for rendered, _, _ in counts) == 20, counts  # exactly once between them
    assert all(sum(count) == 20 for count in counts), counts  # each job accounts for every shard
    assert tar_digests(out) == clean
    assert list((out / "shards").glob("*.lease")) == []
    assert main(["shards", "verify", str(out)]) == 0


@pytest.mark.slow
def test_overwrite_is_refused_while_another_job_holds_leases(clean, tmp_path, capsys):
    out = tmp_path / "dataset"
    job = driver(out, *ARGS)
    try:
        wait_for_lease(out, job)
        replace = ["generate", CONFIG, "--out", str(out), *ARGS, "--overwrite", "--set", "generate.seed=1"]
        assert main([*replace, "--dry-run"]) == 2
        assert main(replace) == 2
    finally:
        printed = job.communicate(timeout=300)[0]
    err = " ".join(capsys.readouterr().err.split())
    assert job.returncode == 0, printed
    assert f"pid {job.pid}" in err and "host" in err and "started" in err and "Traceback" not in err
    assert tar_digests(out) == clean  # one config's shards only: no mix
    assert main(["shards", "verify", str(out)]) == 0


@pytest.mark.slow
def test_a_dead_jobs_lease_expires_and_another_job_takes_its_shard(ray_instance, tmp_path):
    out = tmp_path / "dataset"
    reference = tmp_path / "reference"
    run_generate(gen_config(reference, identities=4, ids_per_shard=2, workers=1), progress=False)
    dead_job = JobIdentity(job="d" * 32, host="lost-node", pid=4242, started="2026-01-01T00:00:00+00:00")
    dead = Leases(open_storage(str(out)), dead_job, ttl_s=3)
    assert dead.take(0) is None
    dead._stop.set()  # the job dies holding shard 0: no more heartbeats, no release
    started = time.monotonic()
    summary = run_generate(gen_config(out, identities=4, ids_per_shard=2, workers=1), progress=False)
    assert summary.shards_done == 2 and summary.shards_by_others == 0
    assert time.monotonic() - started >= 2  # it waited for the lease to expire
    assert any(
        "took over shard 0's expired lease" in note and "lost-node, pid 4242" in note
        for note in summary.notes
    )
    assert tar_digests(out) == tar_digests(reference)


@pytest.mark.slow
def test_repair_renders_damaged_and_missing_shards_to_the_clean_bytes(ray_instance, tmp_path, capsys):
    out = tmp_path / "dataset"
    args = [
        "generate",
        CONFIG,
        "--out",
        str(out),
        "--identities",
        "8",
        "--ids-per-shard",
        "2",
        "--workers",
        "1",
    ]
    assert main(args) == 0
    clean, index_rows = tar_digests(out), read_index(open_storage(str(out))).num_rows
    shards = out / "shards"
    tar = shards / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-3000])  # truncated
    (shards / "shard-000002.tar").unlink()
    (shards / "shard-000002.json").unlink()  # missing
    record = json.loads((shards / "shard-000003.json").read_text())
    record["fingerprint"] = "f" * 64  # committed by another config
    (shards / "shard-000003.json").write_text(json.dumps(record))
    assert main(["shards", "verify", str(out)]) == 1
    assert "foreign" in capsys.readouterr().out
    assert (
        main([*args]) == 0 and shard_counts(capsys.readouterr().out)[0] == 1
    )  # a rerun only adds the missing
    (shards / "shard-000002.json").unlink()
    before = {p.name: p.read_bytes() for p in shards.iterdir()}
    assert main([*args, "--repair", "--dry-run"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "3 shard(s) rendered again: 1 (truncated), 2 (uncommitted), 3 (foreign)" in printed
    assert {p.name: p.read_bytes() for p in shards.iterdir()} == before  # the dry run wrote nothing
    assert main([*args, "--repair"]) == 0
    assert shard_counts(capsys.readouterr().out)[0] == 3
    assert tar_digests(out) == clean
    rendering = Leases(open_storage(str(out)), JobIdentity.current(), ttl_s=60)
    assert rendering.take(0) is None  # a lease beside a shard is not part of the data
    assert main(["shards", "verify", "--deep", str(out)]) == 0
    rendering.close()
    assert read_index(open_storage(str(out))).num_rows == index_rows


@pytest.mark.slow
def test_extend_grows_a_dataset_to_the_bytes_of_a_fresh_run(ray_instance, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    run_generate(gen_config(fresh, identities=10, ids_per_shard=4, workers=1), progress=False)
    out = tmp_path / "dataset"
    base = ["generate", CONFIG, "--out", str(out), "--ids-per-shard", "4", "--workers", "1"]
    assert main([*base, "--identities", "6"]) == 0  # shards 0 (4 identities) and 1 (2 of 4)
    kept = (
        (out / "shards" / "shard-000000.tar").stat().st_mtime_ns,
        (out / "shards" / "shard-000000.json").read_bytes(),
    )
    capsys.readouterr()
    reseeded = [*base, "--identities", "10", "--extend", "--set", "generate.seed=3"]
    for refused in (reseeded, [*reseeded, "--dry-run"], [*base, "--identities", "5", "--extend"]):
        assert main(refused) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "generate.seed: 0 -> 3" in err and "6 identities, asked for 5" in err
    grow = [*base, "--identities", "10", "--extend"]
    assert main([*grow, "--dry-run"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "6 -> 10 identities; 1 new shard(s) (2..2), shard 1 rendered again (it held 2 of 4)" in printed
    assert main(grow) == 0
    assert shard_counts(capsys.readouterr().out) == (2, 0, 1)
    assert tar_digests(out) == tar_digests(fresh)
    shard0 = (
        (out / "shards" / "shard-000000.tar").stat().st_mtime_ns,
        (out / "shards" / "shard-000000.json").read_bytes(),
    )
    assert shard0 == kept  # untouched
    assert main(["shards", "verify", str(out)]) == 0
    assert read_index(open_storage(str(out))).num_rows == read_index(open_storage(str(fresh))).num_rows
