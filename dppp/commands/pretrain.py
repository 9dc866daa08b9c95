"""`dppp pretrain`: CLIP-style image-text pretraining of the tiny CLIP on dppp shards, with Ray Train."""

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


def pretrain(
    config: ConfigArg,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="Pretraining data (repeatable): a dppp dataset URL (local, file://, s3://) whose "
            "samples carry their prompt. Default: pretrain.data.sources.",
        ),
    ] = None,
    out: OutOption = None,
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    sets: SetOption = None,
    endpoint_url: EndpointOption = None,
    progress_every: ProgressEveryOption = None,
) -> None:
    """Pretrain a CLIP on (image, prompt) pairs; the result is a CLIP folder for train.model.backbone."""
    from dppp.trainer.evaluation.zero_shot import report_from_dict
    from dppp.trainer.pretraining.pretrain import run_pretrain

    experiment = load_config(config, sets, endpoint_url=endpoint_url, storage=("pretrain.data.storage",))
    result = run_pretrain(
        experiment.pretrain,
        data,
        out,
        workers=workers,
        ray_address=ray_address,
        progress_every=progress_every,
    )
    console = Console()
    training = result.card.get("training", {})

    def figure(name: str) -> str:
        value = training.get(name)
        return "?" if value is None else f"{value:.4f}"

    console.print(
        f"pretrained {result.steps} steps in {result.wall_s:.1f} s; last epoch loss {figure('final_loss')} "
        f"(chance {figure('chance_loss')}), temperature {figure('temperature')}"
    )
    if "zero_shot" in result.card:
        report = report_from_dict(result.card["zero_shot"])
        console.print(f"zero-shot attribute check on {report.images} held-out images (figures in %):")
        console.print(report.table(), soft_wrap=True, highlight=False)
    console.print(f"run: {result.run_url}\nCLIP folder: {result.final_url}")
    if result.export:
        console.print(f"exported to: {result.export}")
