"""`dppp train` / dppp.trainer.training.train.run_train: Ray Train runs on real shards (local and loopback S3), resume,
a killed worker survived, and the errors a user sees before any worker starts."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from dppp.cli import main
from dppp.foundation.errors import CapacityError, ConfigError
from dppp.foundation.ray_cluster import start_ray
from dppp.trainer.training.config import TrainConfig
from tests.conftest import FAKE_CREDENTIALS, s3_node_environment
from tests.trainer.test_data import write_dataset

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "patch_size": 8, "projection_dim": 32}


def tiny_config(**overrides) -> TrainConfig:
    """A run of seconds: tiny CLIP on 64x32 inputs, P=4 x K=2, one loader process per worker."""
    fields = {
        "model": {
            "image_size": [64, 32],
            "tiny": TINY,
            "inversion_hidden_dim": 32,
            "style_attributes": ["scene", "camid"],
        },  # what tests.trainer.test_data's shards label
        "phase1": {"epochs": 1, "lr": 1e-3},
        "phase2": {"epochs": 2, "lr": 1e-3, "warmup_epochs": 1},
        "data": {"ids_per_batch": 4, "images_per_id": 2, "num_workers": 0, "pool_identities": 4},
        "run_name": "t",
        "log_every_steps": 2,
        "checkpoint_keep": 2,
    }
    for key, value in overrides.items():
        fields[key] = {**fields[key], **value} if isinstance(value, dict) and key in fields else value
    return TrainConfig.model_validate(fields)


@pytest.fixture(scope="module")
def ray_cluster(_moto_server):
    """One local Ray for the module, started as `dppp train` starts it (the dashboard serves the state API
    that Ray Train's placement-group cleaner polls). Its workers inherit the environment at start: the
    loopback S3 endpoint and fake credentials are set first, as a cluster's nodes would have their own."""
    import ray

    with s3_node_environment(_moto_server):
        start_ray(None, 2)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("train-data") / "ds"), n_ids=24, ids_per_shard=3)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- fast: what fails before Ray starts -----------------------------------------------------------


def write_config(tmp_path: Path, train: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"train": train}))
    return path


def test_no_committed_shard_exits_2_with_a_clear_message(tmp_path, capsys):
    url = write_dataset(str(tmp_path / "uncommitted"), n_ids=6, ids_per_shard=3, commit=0)
    code = main(["train", str(write_config(tmp_path, {})), "--data", url, "--out", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no committed shard" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_config_errors_exit_2(tmp_path, capsys, dataset):
    config = write_config(tmp_path, {"data": {"ids_per_batch": 1}})
    assert main(["train", str(config), "--data", dataset]) == 2
    assert "train.data.ids_per_batch" in capsys.readouterr().err
    config = write_config(tmp_path, {"data": {"batch": 4}})
    assert main(["train", str(config), "--data", dataset]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["train", str(write_config(tmp_path, {})), "--data", "market1501:/no/such/folder"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(write_config(tmp_path, {})),
                "--data",
                dataset,
                "--set",
                "train.model.style_attributes=[illumination]",
            ]
        )
        == 2
    )
    assert "style attributes ['illumination'] are not labelled" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(write_config(tmp_path, {})),
                "--data",
                dataset,
                "--workers",
                "3",
                "--set",
                "train.data.ids_per_batch=16",
                "--set",
                "train.model.style_attributes=[camid]",
            ]
        )
        == 2
    )
    assert "can form no batch of 16 identities" in capsys.readouterr().err


def test_learning_rate_warms_up_then_decays_to_the_floor():
    from dppp.trainer.training.steps import lr_at

    lrs = [lr_at(s, 100, 10, 1.0, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_at(100, 100, 10, 1.0, 0.01) == pytest.approx(0.01)


def test_ray_storage_for_s3_uses_the_configured_endpoint(monkeypatch):
    from dppp.dataset.limits import ShardStorageConfig
    from dppp.trainer.training.train import ray_storage

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    path, fs = ray_storage("s3://bucket/runs/x", ShardStorageConfig(endpoint_url="http://127.0.0.1:9000"))
    assert path == "bucket/runs/x" and fs.type_name == "s3"
    local, none = ray_storage("relative/runs", ShardStorageConfig())
    assert os.path.isabs(local) and none is None


def test_user_error_is_found_inside_worker_failures():
    from dppp.foundation.errors import DataError
    from dppp.trainer.training.run_failures import user_error

    class WorkerGroupError(Exception):
        def __init__(self, failures):
            self.worker_failures = failures

    wrapped = WorkerGroupError({1: RuntimeError("x")})
    wrapped.worker_failures[1].__cause__ = DataError(
        "s3://b/ds/shards/shard-000001.tar: truncated or corrupted"
    )
    assert "truncated" in str(user_error(wrapped))
    assert user_error(RuntimeError("a bug")) is None


def test_a_ray_task_error_gives_the_worker_s_ownuser_error():
    """Ray's RayTaskError(ConfigError) is a ConfigError too, but reads as a traceback: the worker's own
    exception (its `.cause`) is reported, with its type and exit code."""
    from ray.exceptions import RayTaskError

    from dppp.trainer.training.run_failures import user_error

    original = ConfigError("no such attribute", path="train.model.style_attributes")
    task_error = RayTaskError(
        "loop", "Traceback (most recent call last):\n  ...", original
    ).as_instanceof_cause()
    assert isinstance(task_error, ConfigError) and str(task_error) != str(original)  # Ray's header and frames
    failure = RuntimeError("Ray Train failed")
    failure.__cause__ = task_error
    assert user_error(failure) is original


def test_no_room_for_the_workers_is_a_capacity_error():
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    from dppp.trainer.training.train import _capacity_error

    failure = RuntimeError("Ray Train failed")
    failure.__cause__ = WorkerGroupStartupTimeoutError(num_workers=2)
    error = _capacity_error(failure, TrainConfig(workers=2))
    assert isinstance(error, CapacityError) and "2 training worker(s)" in str(error)
    assert _capacity_error(RuntimeError("a bug"), TrainConfig()) is None


# ---- slow: real Ray Train runs --------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_train_checkpoint_and_a_rerun_resumes(ray_cluster, dataset, tmp_path):
    from dppp.trainer.methods.checkpoint import load_checkpoint, read_state
    from dppp.trainer.training.train import run_train

    out = tmp_path / "runs"
    first = run_train(tiny_config(), [dataset], str(out), workers=2, progress=False)
    run = out / "t"
    assert first.run_url == str(run) and first.steps > 0
    assert [s["resumed"] for s in first.starts] == [False] and first.starts[0]["world"] == 2
    checkpoints = sorted(run.glob("checkpoint_2*"))
    assert 1 <= len(checkpoints) <= 2  # checkpoint_keep
    assert read_state(checkpoints[-1]).step == first.steps
    model, state = load_checkpoint(run / "final")
    assert state.step == first.steps and state.phase == 2 and model.num_classes == 24
    assert state.config["data"]["num_classes"] == 24
    assert (run / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    records = metrics(run)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 3
    assert [r["phase"] for r in records if r["kind"] == "epoch"] == [1, 2, 2]
    # The phase-1 health report, gathered from both ranks: a random tiny CLIP's content word carries no identity.
    health = [r for r in records if r["kind"] == "health"]
    assert len(health) == 1 and health[0]["images"] == sum(2 + p % 5 for p in range(24))
    assert "carries no identity" in health[0]["warning"] and first.health["warning"] == health[0]["warning"]

    # The same run name with one more phase-2 epoch, explicitly (--extend), and one worker instead of
    # two: it continues at the saved step, it does not restart, and counts its steps at one worker.
    second = run_train(
        tiny_config(phase2={"epochs": 3}), [dataset], str(out), workers=1, progress=False, extend=True
    )
    assert second.starts[0]["resumed"] and second.starts[0]["step"] == first.steps
    assert second.starts[0]["phase"] == 2 and second.starts[0]["epoch"] == 2
    assert second.steps > first.steps and second.resumed_from == first.steps
    assert second.starts[0]["total_steps"] == second.steps  # the bar's total is where the run ended
    assert second.trained == second.steps - first.steps
    records = metrics(run)
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == second.steps
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 0, 1, 2]
    assert read_state(run / "final").step == second.steps


@pytest.mark.slow
def test_loopback_s3_data_and_output(ray_cluster, moto_s3, tmp_path):
    from dppp.foundation.storage.urls import open_storage
    from dppp.trainer.methods.checkpoint import load_checkpoint
    from dppp.trainer.training.train import run_train

    bucket = moto_s3.bucket()
    data = write_dataset(f"{bucket}/ds", n_ids=24, ids_per_shard=3)
    result = run_train(
        tiny_config(phase2={"epochs": 1}, run_name="s3run"),
        [data],
        f"{bucket}/runs",
        workers=2,
        progress=False,
    )
    assert result.final_url == f"{bucket}/runs/s3run/final"
    run = open_storage(result.run_url)
    keys = {o.key for o in run.list()}
    assert {"final/model.safetensors", "final/checkpoint.json", "metrics.jsonl", "loss_curves.png"} <= keys
    assert any(k.startswith("checkpoint_") and k.endswith("/model.safetensors") for k in keys)
    local = tmp_path / "final"
    local.mkdir()
    for name in ("model.safetensors", "checkpoint.json"):
        (local / name).write_bytes(run.read_bytes(f"final/{name}"))
    _, state = load_checkpoint(local)
    assert state.step == result.steps
    # Ray Train's workers got the credentials from the environment they inherited, not through Ray, which
    # writes what it sends to its session folder: the secret is in none of its files
    from ray._private.worker import _global_node

    from tests.pipeline.test_generate_environment import files_holding

    secrets = [FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], FAKE_CREDENTIALS["AWS_SESSION_TOKEN"]]
    assert files_holding(Path(_global_node.get_session_dir_path()), secrets) == []


def _registered_checkpoints(run: Path) -> list[str]:
    """Checkpoints the Ray Train controller has registered (a folder alone may still be uploading)."""
    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return []
    return [c["checkpoint_dir_name"] for c in snapshot.get("checkpoint_results", [])]


@pytest.mark.slow
def test_a_killed_worker_is_survived(ray_cluster, dataset, tmp_path, foreign_ray_processes):
    """A training worker of this run is SIGKILLed: found below this Ray instance's raylet, never by its
    title across the machine (another job's processes, named alike, run beside it and survive)."""
    from dppp.trainer.methods.checkpoint import read_state
    from dppp.trainer.training.train import run_train
    from tests.ray_processes import dead, descendants_titled, this_raylet

    out = tmp_path / "runs"
    config = tiny_config(phase1={"epochs": 1}, phase2={"epochs": 3}, run_name="kill", max_failures=2)
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(
            result=run_train(config, [dataset], str(out), workers=2, progress=False)
        )
    )
    raylet = this_raylet()
    thread.start()
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        if _registered_checkpoints(out / "kill"):  # mid-run, with a checkpoint Ray Train will resume from
            workers = descendants_titled(raylet, b"RayTrainWorker")
            if workers:
                killed = workers[-1]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    thread.join(300)
    assert killed is not None, "the run ended before a worker could be killed"
    result = outcome["result"]
    assert len(result.starts) >= 2 and result.starts[-1]["resumed"] and result.starts[-1]["step"] > 0
    assert read_state(out / "kill" / "final").step == result.steps
    records = metrics(out / "kill")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 0, 1, 2]
    assert not dead(foreign_ray_processes), "another job's processes were killed"


def rank1_on(model, dataset_url: str, image_size) -> tuple[float, float]:
    """(rank-1, chance) of `model` on a dataset held out from training: every identity a test identity,
    one query per camera, Market-1501 protocol (dppp.trainer.data.readers.split_synthetic, dppp.trainer.evaluation.metrics)."""
    import torch

    from dppp.dataset.records import read_index
    from dppp.dataset.shard_reader import read_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.trainer.data.readers import split_synthetic
    from dppp.trainer.data.transforms import EvalTransform
    from dppp.trainer.evaluation.features import distance_matrix
    from dppp.trainer.evaluation.metrics import evaluate_ranking

    storage = open_storage(dataset_url)
    split = split_synthetic(read_index(storage), seed=0)
    images = {}
    for tar in sorted(o.key for o in storage.list("shards/") if o.key.endswith(".tar")):
        with storage.open_read(tar) as stream:
            images.update({s["__key__"]: s["jpg"] for s in read_shard(stream, include={"jpg"})})
    transform = EvalTransform(image_size)

    def features(items):
        pixels = torch.stack([transform(images[item.path.split("#")[1]]) for item in items])
        return model.encode_images(pixels)

    query, gallery = split.query, split.gallery
    distmat = distance_matrix(features(query), features(gallery), metric="cosine")
    result = evaluate_ranking(
        distmat,
        [q.pid for q in query],
        [g.pid for g in gallery],
        [q.camid for q in query],
        [g.camid for g in gallery],
        max_rank=5,
    )
    return result.rank(1), 1 / len({g.pid for g in gallery})


@pytest.mark.slow
def test_training_on_demo_data_measurably_learns(ray_cluster, tmp_path):
    """Procedural demo data (48 identities), the demo's PDM on a randomly initialised tiny CLIP, two workers,
    a few CPU minutes: rank-1 on 24 identities never seen in training rises well above both chance and the
    untrained model. Random weights, because the demo's pretrained CLIP already ranks ~0.8 of these queries
    first untrained: no room left to see the training loop learn (its gain on top of pretraining is what
    benchmarks/bench_domain_generalization.py measures, with seeds and intervals)."""
    from dppp.config import load_experiment
    from dppp.pipeline.generate import run_generate
    from dppp.trainer.methods.checkpoint import load_checkpoint
    from dppp.trainer.methods.model import build_model
    from dppp.trainer.training.train import run_train

    demo = load_experiment(Path(__file__).parents[2] / "configs" / "demo.yaml")
    # Rendered at the model's input size: the same pictures, a quarter of the pixels to render and decode.
    output = demo.generate.output.model_copy(update={"height": 128, "width": 64})
    generate = demo.generate.model_copy(
        update={"identities": 48, "ids_per_shard": 4, "workers": 2, "output": output}
    )
    train_url, test_url = str(tmp_path / "train"), str(tmp_path / "held-out")
    run_generate(generate.model_copy(update={"out": train_url}), progress=False)
    run_generate(generate.model_copy(update={"out": test_url, "seed": 1, "identities": 24}), progress=False)

    config = TrainConfig.model_validate(
        {
            **demo.train.model_dump(),
            "model": {
                **demo.train.model.model_dump(),
                "backbone": "tiny",
                "tiny": {
                    "hidden_size": 128,
                    "intermediate_size": 256,
                    "num_layers": 2,
                    "num_heads": 4,
                    "patch_size": 16,
                    "projection_dim": 128,
                },
            },
            "phase1": {"epochs": 2, "lr": 2e-3},
            "phase2": {"epochs": 50, "lr": 2e-3, "warmup_epochs": 2},
            "data": {
                **demo.train.data.model_dump(),
                "ids_per_batch": 8,
                "images_per_id": 4,
                "num_workers": 0,
            },
            "run_name": "learn",
        }
    )
    result = run_train(config, [train_url], str(tmp_path / "runs"), workers=2, progress=False)
    trained, _ = load_checkpoint(result.final_url)
    untrained = build_model(config.model, trained.num_classes, trained.style_vocab)
    size = config.model.image_size
    rank1, chance = rank1_on(trained, test_url, size)
    before, _ = rank1_on(untrained, test_url, size)
    print(f"held-out rank-1: trained {rank1:.3f}, untrained {before:.3f}, chance {chance:.3f}")
    assert rank1 >= 2 * chance
    assert rank1 >= before + 0.1


def test_a_relative_out_reaches_the_workers_absolute(tmp_path, monkeypatch):
    from dppp.trainer.training.train import absolute_out

    monkeypatch.chdir(tmp_path)
    assert absolute_out("runs/demo/train") == str(tmp_path / "runs" / "demo" / "train")
    assert absolute_out("s3://bucket/runs") == "s3://bucket/runs"
    assert absolute_out("file:///data/runs") == "file:///data/runs"
