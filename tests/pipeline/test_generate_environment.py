"""`dppp generate` against its environment: the S3 credentials it runs with never reach a file the run leaves
(Ray's session folder, logs included), the dataset or the terminal; an output that stops taking writes
mid-run ends in the summary and the rerun hint, not a traceback.

One local Ray for the module, started as `dppp` starts it (foundation/ray_cluster.py), under a private
RAY_TMPDIR so its session folder is this test's to read, after the loopback S3 endpoint and its fake
credentials are in the environment: a local instance inherits the driver's environment, as a cluster's
nodes carry their own credentials.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dppp.cli import main
from dppp.dataset.listing import committed_shards
from dppp.foundation.ray_cluster import start_ray
from dppp.foundation.storage.urls import open_storage
from tests.conftest import FAKE_CREDENTIALS, s3_node_environment

ROOT = Path(__file__).resolve().parents[2]
SECRETS = [FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], FAKE_CREDENTIALS["AWS_SESSION_TOKEN"]]


@pytest.fixture(scope="module")
def ray_session(_moto_server):
    """The Ray instance's session folder (Path); Ray runs for the whole module."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # left by an earlier module: this one needs its own, under its own folder
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="dppp-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    with s3_node_environment(_moto_server), pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", temp)
        start_ray(None, 2)
        try:
            yield Path(temp) / "ray" / "session_latest"
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def files_holding(root: Path, secrets: list[str]) -> list[str]:
    """Every file under `root` (symlinks not followed) whose bytes contain one of `secrets`."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:  # a socket, or a file removed while we walked
                continue
            found += [f"{path}: {secret}" for secret in secrets if secret.encode() in data]
    return found


def generate_argv(out: str, *more: str) -> list[str]:
    sets = ["identities=4", "ids_per_shard=2", "workers=1"]
    argv = ["generate", str(ROOT / "configs" / "demo.yaml"), "--out", out]
    return argv + [arg for item in sets for arg in ("--set", f"generate.{item}")] + list(more)


@pytest.mark.slow
def test_s3_generate_leaves_no_secret_in_ray_files_the_dataset_or_the_terminal(
    ray_session, moto_s3, tmp_path, capsys
):
    url = moto_s3.bucket() + "/datasets/demo"
    assert main(generate_argv(url)) == 0
    out, err = capsys.readouterr()
    assert len(committed_shards(open_storage(url))) == 2  # the actors reached the bucket
    assert ray_session.is_dir() and any((ray_session / "logs").iterdir())
    assert files_holding(ray_session, SECRETS) == []
    dataset = open_storage(url)
    for obj in dataset.list():
        data = dataset.read_bytes(obj.key)
        assert not any(secret.encode() in data for secret in SECRETS), obj.key
    assert not any(secret in out + err for secret in SECRETS)


@pytest.mark.slow
def test_an_output_that_stops_taking_writes_mid_run_ends_in_the_summary_and_a_rerun_finishes(
    ray_session, refuse_writes, monkeypatch, tmp_path, capsys
):
    import dppp.pipeline.generate as generate_module
    from dppp.dataset.records import read_index

    out = tmp_path / "dataset"
    start_ray_first = generate_module.start_ray

    def start_then_refuse(*args, **kwargs):  # dataset.json is written; from here on the driver's writes fail
        start_ray_first(*args, **kwargs)
        refuse_writes(out)

    monkeypatch.setattr(generate_module, "start_ray", start_then_refuse)
    monkeypatch.setenv("COLUMNS", "400")  # rich's width: the summary's rows stay whole lines
    assert main(generate_argv(str(out))) == 1
    printed, err = capsys.readouterr()
    assert "Traceback" not in printed + err
    lines = [line.strip(" │┃") for line in printed.splitlines()]
    assert any(
        line.startswith("shards")
        and "2 rendered, 0 done by other jobs, 0 already committed, 2 in plan" in line
        for line in lines
    )
    assert f"stopped: index.parquet not written: cannot write {out}/index.parquet: permission denied" in lines
    assert lines[-1] == "Committed shards stay valid; rerun the same command to render the rest."
    assert len(committed_shards(open_storage(str(out)))) == 2 and not (out / "index.parquet").exists()

    monkeypatch.undo()  # the folder takes writes again: the rerun renders nothing and writes the index
    assert main(generate_argv(str(out))) == 0
    assert "0 rendered, 0 done by other jobs, 2 already committed" in capsys.readouterr().out
    assert read_index(open_storage(str(out))).num_rows > 0
