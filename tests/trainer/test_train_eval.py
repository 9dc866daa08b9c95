"""Held-out evaluation during training (`train.eval`, trainer/training/held_out.py): checked before Ray starts,
evaluated at the epoch ends it asks for, recorded in metrics.jsonl, TensorBoard and the curves PNG."""

from __future__ import annotations

import json

import pytest

from dppp.cli import main
from dppp.trainer.training.config import TrainConfig
from tests.trainer.test_data import write_dataset
from tests.trainer.test_eval import MARKET_PIDS, market_dir  # noqa: F401 (a fixture)
from tests.trainer.test_train import ray_cluster, tiny_config, write_config  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    from dppp.dataset.index import write_index
    from dppp.foundation.storage.urls import open_storage

    url = write_dataset(str(tmp_path_factory.mktemp("train-eval") / "ds"), n_ids=24, ids_per_shard=3)
    write_index(open_storage(url))  # what a synthetic: evaluation reads
    return url


def test_an_eval_dataset_with_training_people_is_refused_before_ray_starts(dataset, tmp_path, capsys):
    import ray

    config = write_config(tmp_path, tiny_config().model_dump(mode="json", exclude={"out"}))
    spec = f"synthetic:{dataset}"
    code = main(["train", str(config), "--data", dataset, "--set", f"train.eval.datasets=[{spec}]"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"train.eval.datasets {spec}" in err and "also appear in the training data" in err
    assert "Traceback" not in err and not ray.is_initialized()
    code = main(
        ["train", str(config), "--data", dataset, "--set", "train.eval.datasets=[market1501:/no/such]"]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["train", str(config), "--data", dataset, "--set", "train.eval.datasets=[imagenet:/x]"])
    assert code == 2 and "unknown name 'imagenet'" in capsys.readouterr().err


def test_held_out_eval_is_due_every_n_epochs_of_the_last_phase_and_at_its_end():
    from dppp.trainer.training.held_out import HeldOutEval

    config = TrainConfig.model_validate({"eval": {"datasets": ["market1501:/m"], "every_epochs": 3}})
    held_out = HeldOutEval(config, last_phase=2)
    assert [e for e in range(7) if held_out.due(2, e, 7)] == [2, 5, 6]
    assert not any(held_out.due(1, e, 7) for e in range(7))  # phase 1 leaves the image encoder as it is
    assert not HeldOutEval(TrainConfig(), last_phase=2).due(2, 0, 1)


def test_held_out_eval_records_and_the_curves_panel(market_dir, tmp_path):  # noqa: F811
    """A real tiny model ranked on a Market-1501 folder: the records carry `dppp eval`'s figures, and
    the loss-curve picture gains a held-out panel."""
    import torch
    from PIL import Image

    from dppp.trainer.methods.model import build_model
    from dppp.trainer.training.held_out import HeldOutEval
    from dppp.trainer.training.run_log import plot_loss_curves

    config = tiny_config(eval={"datasets": [f"market1501:{market_dir}"], "every_epochs": 1})
    model = build_model(config.model, num_classes=4, style_vocab={"scene": 3, "camid": 4})
    model.set_phase(2)
    model.train()
    records = HeldOutEval(config, last_phase=2).run(model, torch.device("cpu"), step=12, phase=2, epoch=0)
    assert model.training  # back in train mode
    (record,) = records
    assert record["kind"] == "eval" and (record["step"], record["phase"], record["epoch"]) == (12, 2, 0)
    assert record["dataset"] == f"market1501:{market_dir}" and record["queries"] == len(MARKET_PIDS)
    assert record["rank1"] == 1.0 and record["mAP"] == 1.0  # the folder every model retrieves perfectly
    metrics = tmp_path / "metrics.jsonl"
    steps = [{"kind": "step", "step": s, "phase": 2, "loss": 1.0 / s} for s in range(1, 13)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in [*steps, *records]))
    plot_loss_curves(metrics, tmp_path / "with.png")
    metrics.write_text("".join(json.dumps(r) + "\n" for r in steps))
    plot_loss_curves(metrics, tmp_path / "without.png")
    with Image.open(tmp_path / "with.png") as with_eval, Image.open(tmp_path / "without.png") as without:
        assert with_eval.width == 2 * without.width  # one more panel


@pytest.mark.slow
def test_a_run_with_train_eval_records_each_epoch_fed_by_persistent_loader_processes(
    ray_cluster,  # noqa: F811
    dataset,
    market_dir,  # noqa: F811
    tmp_path,
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dppp.trainer.training.train import run_train

    spec = f"market1501:{market_dir}"
    # Two loader processes: the persistent loader (trainer/data/loader.py) in a real run too.
    config = tiny_config(eval={"datasets": [spec], "every_epochs": 1}, data={"num_workers": 2})
    result = run_train(config, [dataset], str(tmp_path / "runs"), workers=1, progress=False)
    run = tmp_path / "runs" / "t"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [(r["phase"], r["epoch"], r["dataset"]) for r in evals] == [(2, 0, spec), (2, 1, spec)]
    epoch_steps = [r["step"] for r in records if r["kind"] == "epoch" and r["phase"] == 2]
    assert [r["step"] for r in evals] == epoch_steps
    assert all(0 < r["mAP"] <= 1 and 0 <= r["rank1"] <= 1 for r in evals)
    assert [r["dataset"] for r in result.evals] == [spec] and result.evals[0]["step"] == result.steps
    (events,) = run.glob("tensorboard/events.out.tfevents.*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert f"eval/{spec}/mAP" in tags and f"eval/{spec}/rank1" in tags
