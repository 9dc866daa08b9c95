"""`dppp train CONFIG --dry-run`: the workers' own plan and the expected GPU time, without Ray."""

from __future__ import annotations

import pytest
import yaml

from dppp.cli import main
from tests.trainer.test_data import write_dataset
from tests.trainer.test_train import tiny_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("dry-run") / "ds"), n_ids=24, ids_per_shard=3)


def test_the_dry_run_prints_the_plan_the_workers_run_and_starts_nothing(dataset, tmp_path, capsys):
    import ray

    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.training.train import total_steps

    config = tiny_config(workers=2)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"train": config.model_dump(mode="json", exclude={"out"})}))
    out = tmp_path / "runs"
    assert main(["train", str(path), "--data", dataset, "--out", str(out), "--dry-run"]) == 0
    said = capsys.readouterr().out
    data = open_training_data([dataset])
    steps = total_steps(config, data, 2)  # what run_train plans for the progress bar
    assert f"the run: {steps} optimiser steps" in said
    assert "24 identities" in said and f"{data.num_images} images" in said and "2 worker(s)" in said
    assert "phase 1: 1 epochs" in said and "phase 2: 2 epochs" in said
    assert "no measured training rate applies" in said  # a CPU run of the tiny CLIP
    assert not ray.is_initialized() and not out.exists()


def test_data_not_generated_yet_is_planned_from_the_generate_section(tmp_path, capsys):
    missing = str(tmp_path / "not-yet")
    config = tiny_config(data={"sources": [missing]}).model_dump(mode="json", exclude={"out"})
    experiment = {
        "generate": {
            "out": missing,
            "identities": 40,
            "ids_per_shard": 4,
            "renderer": {"kind": "procedural"},
        },
        "train": config,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["train", str(path), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "planned from the generate section" in said and "40 identities" in said and "10 units" in said
    assert not (tmp_path / "not-yet").exists()


def test_the_gpu_estimate_rests_on_counted_flops_and_says_what_is_not_measured():
    from dppp.trainer.training.capacity import (
        AIM_FRACTION,
        GFLOP_PER_IMAGE,
        H100_BF16_DENSE_TFLOPS,
        estimate_train_hours,
    )
    from dppp.trainer.training.config import TrainConfig
    from dppp.trainer.training.plan import PhasePlan, TrainPlan

    config = TrainConfig.model_validate(
        {
            "model": {"backbone": "openai/clip-vit-base-patch16", "image_size": [256, 128]},
            "use_gpu": True,
            "workers": 8,
            "data": {"num_workers": 64},  # enough loader processes: the GPU sets the pace
        }
    )
    plan = TrainPlan(
        "x", 100, 1000, 8, 8, 64, 64, (PhasePlan(1, 1, 10, 640, 1), PhasePlan(2, 1, 20, 1280, 1))
    )
    estimate = estimate_train_hours(config, plan)
    rate2 = AIM_FRACTION * H100_BF16_DENSE_TFLOPS * 1e12 / (GFLOP_PER_IMAGE[2] * 1e9)
    assert estimate.hours_per_phase[2] == pytest.approx(1280 / rate2 / 3600)
    assert "no rate measured yet" in estimate.describe()
    few = config.model_copy(update={"data": config.data.model_copy(update={"num_workers": 2})})
    assert "the loader sets the pace" in estimate_train_hours(few, plan).describe()
    cpu = config.model_copy(update={"use_gpu": False})
    assert estimate_train_hours(cpu, plan) is None
