"""`dppp train CONFIG --dry-run`: the run's plan and its expected GPU time, without Ray or a GPU.

The plan is the workers' own (trainer/training/plan.py) over the committed shards of the training data; a
dataset not generated yet (the experiment's `generate.out`, unreadable here) is planned from the generate
section's shard plan instead, and the output says which. The time is trainer/training/capacity.py's.
"""

from __future__ import annotations

from dppp.foundation.config import with_updates
from dppp.foundation.errors import UserError
from dppp.foundation.storage.base import redact_url
from dppp.pipeline.generate import build_plan
from dppp.trainer.data.sources import open_training_data
from dppp.trainer.training.capacity import estimate_train_hours
from dppp.trainer.training.plan import plan_run, planned_data


def train_dry_run(experiment, data: list[str] | None, out: str | None, workers: int | None) -> list[str]:
    """The lines `dppp train --dry-run` prints."""
    config = with_updates(experiment.train, "train", workers=workers, out=out)
    sources = list(data) if data else list(config.data.sources)
    try:
        training = open_training_data(sources, config.data.storage, config.data.folder_ids_per_unit)
        where = "the committed shards of " + ", ".join(redact_url(s) for s in sources)
    except UserError as exc:
        generated = experiment.generate.out
        if [s.rstrip("/") for s in sources] != [generated.rstrip("/")]:
            raise
        training = _planned(experiment.generate, sources, config.data.storage)
        where = (
            f"{redact_url(generated)} not readable here ({redact_url(str(exc))}); planned from the generate "
            "section instead"
        )
    plan = plan_run(config, training, where)
    lines = plan.lines()
    estimate = estimate_train_hours(config, plan)
    lines.append(
        estimate.describe()
        if estimate
        else "no measured training rate applies to this backbone or device (benchmarks/bench_train_gpu.py "
        "measures one on a GPU)"
    )
    lines.append("Nothing started, nothing written.")
    return lines


def _planned(generate_config, sources, storage):
    # Only the view counts matter here: the prompt token counter need not load a tokenizer.
    prompts = generate_config.prompts.model_copy(update={"tokenizer": "estimate"})
    plan = build_plan(generate_config.model_copy(update={"prompts": prompts}))
    views = [[plan.engine.num_views(pid) for pid in shard.pids] for shard in plan.shards]
    return planned_data(views, sources, storage)
