"""Run accounting (issue 25): the steps a resumed run has left, with the worker count it resumes with;
a finished run rerun trains nothing; other epochs on a finished run are refused or explicit. No Ray: the
counts are the same functions the worker loop and the progress bar use, checked against the batches the
real streams yield."""

from __future__ import annotations

import pytest

from dppp.cli import main
from dppp.trainer.data.sources import open_training_data
from dppp.trainer.data.streams import PKBatchStream
from dppp.trainer.methods.registry import method_spec
from dppp.trainer.training.steps import EpochSteps, Position, phase_schedule, remaining_steps, resume_skip
from tests.trainer.test_data import write_dataset
from tests.trainer.test_train import tiny_config, write_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("accounting") / "ds"), n_ids=24, ids_per_shard=3)


def _batches_run(data, config, schedules, position: Position, world: int) -> int:
    """The batches rank 0 really gets from `position` to the end, read as the loop reads them."""
    steps = EpochSteps(data, config, world)
    count = 0
    for phase, schedule, first in schedules:
        if phase < position.phase:
            continue
        start = position.epoch if phase == position.phase else 0
        for epoch in range(start, schedule.epochs):
            here = (phase, epoch) == (position.phase, position.epoch)
            stream = PKBatchStream(
                data,
                config.data,
                config.model.image_size,
                seed=config.seed,
                epoch=first + epoch,
                rank=0,
                world=world,
                skip=resume_skip(position, steps(first + epoch)) if here else 0,
            )
            count += sum(1 for _ in stream)
    return count


def test_a_resume_with_another_worker_count_counts_the_steps_it_runs(dataset):
    """The bug: a run checkpointed mid-epoch with 2 workers, resumed with 1 (and the reverse), counted its
    total at the new count for the whole run (the bar stopped at 241/429), or failed on a batch index
    past the new plan's end. Now the total is the saved step plus the batches the resumed start runs."""
    config = tiny_config(phase1={"epochs": 1}, phase2={"epochs": 2})
    data = open_training_data([dataset], config.data.storage, config.data.folder_ids_per_unit)
    schedules = phase_schedule(config, method_spec(config.model.method).phases)
    two, one = EpochSteps(data, config, 2), EpochSteps(data, config, 1)
    assert two(1) < one(1)  # the plans differ: the case that went wrong
    # Saved by 2 workers in phase 2's first epoch (global epoch 1), 2 batches in, at global step s.
    saved_at = two(0) + 2
    position = Position(phase=2, epoch=0, batch=2, step=saved_at, epoch_steps=two(1))
    left = remaining_steps(position, schedules, one)
    assert left == _batches_run(data, config, schedules, position, world=1)
    skip = resume_skip(position, one(1))
    assert skip == round(2 * one(1) / two(1)) and 0 < skip < one(1)  # the same fraction of the epoch
    assert left == one(1) - skip + one(2)
    # The reverse: saved by 1 worker late in an epoch, resumed by 2: the old batch index would be past
    # the 2-worker plan's end (PKBatchStream refused it); the fraction lands inside it.
    late = Position(phase=2, epoch=0, batch=one(1) - 1, step=one(0) + one(1) - 1, epoch_steps=one(1))
    assert late.batch > two(1)
    assert 0 <= resume_skip(late, two(1)) <= two(1)
    assert remaining_steps(late, schedules, two) == _batches_run(data, config, schedules, late, world=2)
    # The same worker count: the recorded batch is exact, nothing rescaled.
    same = Position(phase=2, epoch=0, batch=2, step=saved_at, epoch_steps=two(1))
    assert resume_skip(same, two(1)) == 2
    assert remaining_steps(same, schedules, two) == two(1) - 2 + two(2)
    # A checkpoint from before epoch_steps was recorded (0): the batch index, clamped to the plan.
    assert resume_skip(Position(2, 0, 10_000, 0), two(1)) == two(1)


def _finish_run(out, config, dataset) -> int:
    """A finished run's final/ exactly as the worker writes it (its commit marker last)."""
    from dppp.trainer.methods.checkpoint import save_checkpoint
    from dppp.trainer.methods.model import build_model

    data = open_training_data([dataset], config.data.storage, config.data.folder_ids_per_unit)
    model = build_model(config.model, data.num_classes, data.style_vocab)
    step = 37
    save_checkpoint(
        out / config.run_name / "final",
        model,
        None,
        step=step,
        config={
            "train": config.model_dump(mode="json"),
            "progress": {"phase": 2, "epoch": 0, "batch": 0, "step": step},
        },
    )
    return step


def test_a_finished_run_rerun_trains_nothing_and_other_epochs_are_explicit(dataset, tmp_path, capsys):
    import ray

    config = tiny_config()
    out = tmp_path / "runs"
    step = _finish_run(out, config, dataset)
    train = config.model_dump(mode="json", exclude={"out"})
    path = write_config(tmp_path, train)
    args = ["train", str(path), "--data", dataset, "--out", str(out)]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert f"already finished at step {step}: nothing trained" in said and "trained 0" not in said
    assert not ray.is_initialized()  # decided before Ray starts
    # More epochs: refused without --extend, and the message says what changed and how to go on.
    assert main([*args, "--set", "train.phase2.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "is finished (37 steps)" in err and "train.phase2.epochs 2 -> 3" in err and "--extend" in err
    # Fewer epochs: refused even with --extend.
    assert main([*args, "--set", "train.phase1.epochs=0", "--extend"]) == 2
    assert "cannot be shortened" in capsys.readouterr().err
    assert not ray.is_initialized()
