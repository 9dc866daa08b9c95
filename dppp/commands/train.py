"""`dppp train`: stream committed shards into the configured Re-ID model with Ray Train."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from dppp.commands.common import (
    ConfigArg,
    EndpointOption,
    OutOption,
    ProgressEveryOption,
    RayAddressOption,
    SetOption,
    WorkersOption,
    load_config,
)

# Only what `dppp --help` loads anyway is imported at the top: the library modules a command calls (pydantic
# configs, numpy, pyarrow, torch, ray, even rich.progress and the storage helpers) are imported inside it,
# so `dppp --help` and a bad flag stay fast.


def train(
    config: ConfigArg,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="Training data (repeatable): a dppp dataset URL (local, file://, s3://) or "
            "NAME:PATH of a Re-ID folder, e.g. market1501:/data/Market-1501. Default: train.data.sources.",
        ),
    ] = None,
    out: OutOption = None,
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    sets: SetOption = None,
    endpoint_url: EndpointOption = None,
    progress_every: ProgressEveryOption = None,
    extend: Annotated[
        bool,
        typer.Option(
            "--extend",
            help="Continue a finished run to the config's larger train.phase1/phase2.epochs "
            "(without it such a rerun is refused).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (identities, images, steps per phase and worker) and the expected GPU "
            "time; start nothing.",
        ),
    ] = False,
) -> None:
    """Train on committed shards with Ray Train; rerun with the same run name to resume."""
    from dppp.trainer.training.train import run_train

    experiment = load_config(config, sets, endpoint_url=endpoint_url, storage=("train.data.storage",))
    if dry_run:
        from dppp.train_dry_run import train_dry_run

        for line in train_dry_run(experiment, data, out, workers):
            Console().print(line, soft_wrap=True, highlight=False)
        return
    result = run_train(
        experiment.train,
        data,
        out,
        workers=workers,
        ray_address=ray_address,
        extend=extend,
        progress_every=progress_every,
    )
    console = Console()
    if result.already_finished:
        console.print(
            f"run {result.run_url} is already finished at step {result.steps}: nothing trained "
            "(train a new run with --set train.run_name=NAME, or raise the epochs and pass --extend)\n"
            f"final model: {result.final_url}"
        )
        return
    losses = ", ".join(
        f"{k.removeprefix('loss/')} {v:.4f}"
        for k, v in sorted(result.last_epoch.items())
        if k.startswith("loss")
    )
    resumes = [start.get("step") for start in result.starts[1:]]
    console.print(
        (f"resumed from step {result.resumed_from}: " if result.resumed_from is not None else "")
        + f"trained {result.trained} steps in {result.wall_s:.1f} s (the run is at step {result.steps})"
        + (
            f" (restarted {len(resumes)} time(s), from the checkpoints at steps "
            f"{', '.join(map(str, resumes))})"
            if resumes
            else ""
        )
    )
    if losses:
        console.print(f"last epoch: {losses}")
    if result.health:
        from dppp.trainer.methods.health import format_report

        console.print(
            format_report(result.health),
            soft_wrap=True,
            highlight=False,
            style="bold red" if result.health.get("warning") else None,
        )
    for record in result.evals:
        console.print(
            f"held-out {record['dataset']} at step {record['step']}: mAP {100 * record['mAP']:.1f}%, "
            f"rank-1 {100 * record['rank1']:.1f}%",
            soft_wrap=True,
        )
    console.print(f"run: {result.run_url}\nfinal model: {result.final_url}")
