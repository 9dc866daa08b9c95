"""`dppp eval`: rank-1/5/10, mAP and mINP of a trained model on Re-ID benchmarks and synthetic splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dppp.commands.common import EndpointOption, SetOption, load_config
from dppp.foundation.errors import UserError

# Only what `dppp --help` loads anyway is imported at the top: the library modules a command calls (pydantic
# configs, numpy, pyarrow, torch, ray, even rich.progress and the storage helpers) are imported inside it,
# so `dppp --help` and a bad flag stay fast.


def evaluate(
    model: Annotated[
        str,
        typer.Argument(
            help="The model: a checkpoint folder (model.safetensors + checkpoint.json) or a training "
            "run folder holding one in final/; local, file:// or s3://."
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Argument(help="Experiment YAML whose eval section is used (default: built-in defaults)."),
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="NAME:PATH to evaluate on (repeatable); names: market1501, dukemtmc, "
            "msmt17, cuhk03-labeled, cuhk03-detected, synthetic. Default: eval.datasets.",
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Write the JSON report here (local path or s3:// URL).")
    ] = None,
    sets: SetOption = None,
    endpoint_url: EndpointOption = None,
    dataset_alias: Annotated[list[str] | None, typer.Option("--dataset", hidden=True)] = None,
    config_option: Annotated[Path | None, typer.Option("--config", hidden=True)] = None,
    zero_shot: Annotated[
        bool,
        typer.Option(
            "--zero-shot",
            help="MODEL is a CLIP folder (or hub id): classify every taxonomy attribute of "
            "the --data images (dppp datasets of people it was not trained on) by text prompts alone, "
            "beside chance. Settings: pretrain.zero_shot.",
        ),
    ] = False,
    ranks: Annotated[
        Path | None,
        typer.Option(
            "--ranks",
            help="Draw ranked results into this PNG: queries with their top-k gallery images, true "
            "matches framed green, others red (one PNG per dataset: -1, -2, ... with several).",
        ),
    ] = None,
    ranks_queries: Annotated[int, typer.Option("--ranks-queries", min=1, help="Queries drawn.")] = 8,
    ranks_top_k: Annotated[int, typer.Option("--ranks-top-k", min=1, help="Gallery images per query.")] = 10,
) -> None:
    """Evaluate a trained model with the Market-1501 protocol: a table per dataset and a JSON report.
    With --zero-shot: the zero-shot attribute check of a CLIP folder."""
    from dppp.trainer.evaluation.evaluate import run_eval

    if config is not None and config_option is not None:
        raise UserError("give the experiment YAML once: as CONFIG (or the older --config), not both")
    dataset = [*(data or []), *(dataset_alias or [])] or None  # --dataset: the older spelling of --data
    experiment = load_config(
        config or config_option, sets, endpoint_url=endpoint_url, storage=("train.data.storage",)
    )
    console = Console()
    if zero_shot:
        _zero_shot(model, dataset, experiment, out, console)
        return
    report = run_eval(
        model,
        dataset,
        experiment.eval,
        out,
        storage_config=experiment.train.data.storage,
        on_dataset=lambda d: console.print(f"evaluated {d.spec} in {d.seconds:.1f} s"),
        ranks=str(ranks) if ranks is not None else None,
        ranks_queries=ranks_queries,
        ranks_top_k=ranks_top_k,
    )
    info = report.model
    table = Table(title=f"dppp eval: {info['method']} (step {info['step']}) from {info['url']}")
    # Short headers: the table must stay readable at 80 columns (a pipe, a CI log).
    for column in ("#", "query", "gallery", "R-1", "R-5", "R-10", "mAP", "mINP", "skipped", "chance R-1"):
        table.add_column(column, justify="right")
    for number, d in enumerate(report.datasets, start=1):
        table.add_row(
            str(number),
            str(d.num_query),
            str(d.num_gallery),
            *(f"{100 * v:.1f}" for v in (d.rank1, d.rank5, d.rank10, d.mAP, d.mINP)),
            str(d.num_skipped),
            f"{100 * d.chance_rank1:.1f}",
        )
    for number, d in enumerate(report.datasets, start=1):
        console.print(f"#{number}: {d.spec}", soft_wrap=True)
    console.print(table)
    settings = report.config
    console.print(
        f"metric {settings['metric']}, flip {settings['flip']}, re-ranking "
        f"{settings['rerank']['enabled']}; figures in %; chance R-1: rank-1 of a random ranking"
    )
    if out is not None:
        console.print(f"report: {out}")
    if ranks is not None:
        console.print(
            f"ranked results: {ranks}"
            + (" (one per dataset: -1, -2, ...)" if len(report.datasets) > 1 else ""),
            soft_wrap=True,
        )


def _zero_shot(model: str, datasets: list[str] | None, experiment, out: str | None, console) -> None:
    from dppp.trainer.clip.model_card import read_card
    from dppp.trainer.data.specs import dataset_location
    from dppp.trainer.evaluation.zero_shot import zero_shot_folder

    config = experiment.pretrain.zero_shot
    if datasets:
        config = config.model_copy(update={"datasets": tuple(dataset_location(d) for d in datasets)})
    if not config.datasets:
        raise UserError(
            "--zero-shot needs held-out images: --data PATH (a dppp dataset) or pretrain.zero_shot.datasets"
        )
    card = read_card(model) if Path(model).is_dir() else None
    image_size = (
        tuple(card["image_size"]) if card and card.get("image_size") else experiment.pretrain.model.image_size
    )
    if card:
        from dppp.trainer.data.identities import check_disjoint

        for url in config.datasets:
            check_disjoint(
                card.get("data", {}).get("people", []),
                url,
                f"pretraining corpus of {model}",
                experiment.train.data.storage,
            )
    report = zero_shot_folder(model, config, image_size, storage_config=experiment.train.data.storage)
    console.print(
        f"zero-shot attribute check of {model} on {report.images} images of {', '.join(report.datasets)} "
        "(figures in %; chance: 1 / classes; majority: always the most frequent value)",
        soft_wrap=True,
    )
    console.print(report.table(), soft_wrap=True, highlight=False)
    if out is not None:
        from dppp.foundation.storage.urls import split_url

        storage, key = split_url(out, experiment.train.data.storage)
        storage.put_bytes((json.dumps(report.as_dict(), indent=1, sort_keys=True) + "\n").encode(), key)
        console.print(f"report: {out}")
