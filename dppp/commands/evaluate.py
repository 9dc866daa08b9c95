"""`dppp eval`: rank-1/5/10, mAP and mINP of a trained model on Re-ID benchmarks and synthetic splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dppp.commands.common import SetOption, load_config


def evaluate(
    model: Annotated[
        str,
        typer.Argument(help="The model: a checkpoint folder (model.safetensors + checkpoint.json) or a training "
                       "run folder holding one in final/; local, file:// or s3://."),
    ],
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", help="NAME:PATH to evaluate on (repeatable); names: market1501, dukemtmc, "
                     "msmt17, cuhk03-labeled, cuhk03-detected, synthetic. Default: eval.datasets."),
    ] = None,
    out: Annotated[str | None, typer.Option(help="Write the JSON report here (local path or s3:// URL).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML whose eval section is used (default: built-in defaults).")
    ] = None,
    sets: SetOption = None,
) -> None:
    """Evaluate a trained model with the Market-1501 protocol: a table per dataset and a JSON report."""
    from rich.console import Console
    from rich.table import Table

    from trainer.evaluate import run_eval

    experiment = load_config(config, sets) if config is not None else _defaults(sets)
    console = Console()
    report = run_eval(model, dataset, experiment.eval, out, storage_config=experiment.train.data.storage,
                      on_dataset=lambda d: console.print(f"evaluated {d.spec} in {d.seconds:.1f} s"))  # fmt: skip
    info = report.model
    table = Table(title=f"dppp eval: {info['method']} (step {info['step']}) from {info['url']}")
    # Short headers: the table must stay readable at 80 columns (a pipe, a CI log).
    for column in ("#", "query", "gallery", "R-1", "R-5", "R-10", "mAP", "mINP", "skipped", "chance R-1"):
        table.add_column(column, justify="right")
    for number, d in enumerate(report.datasets, start=1):
        table.add_row(str(number), str(d.num_query), str(d.num_gallery),
                      *(f"{100 * v:.1f}" for v in (d.rank1, d.rank5, d.rank10, d.mAP, d.mINP)),
                      str(d.num_skipped), f"{100 * d.chance_rank1:.1f}")  # fmt: skip
    for number, d in enumerate(report.datasets, start=1):
        console.print(f"#{number}: {d.spec}", soft_wrap=True)
    console.print(table)
    settings = report.config
    console.print(f"metric {settings['metric']}, flip {settings['flip']}, re-ranking "
                  f"{settings['rerank']['enabled']}; figures in %; chance R-1: rank-1 of a random ranking")  # fmt: skip
    if out is not None:
        console.print(f"report: {out}")


def _defaults(sets: list[str] | None):
    from dppp.config import load_experiment

    return load_experiment(None, sets or [])
