"""`dppp curate`: score every committed image of a dataset and write URL/curation.parquet (a Ray job)."""

from __future__ import annotations

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


def curate(
    url: Annotated[
        str, typer.Argument(help="Dataset root: a local path, file:///path or s3://bucket/prefix.")
    ],
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Experiment YAML whose `curate:` section sets the thresholds (default: built-in)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="The judging CLIP: a local folder or hub id (default: models/tiny-clip)."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Curate actors (default: one per GPU, else per CPU).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster (default: RAY_ADDRESS, else a local instance).")
    ] = None,
    sets: SetOption = None,
    endpoint_url: EndpointOption = None,
    config_option: Annotated[Path | None, typer.Option("--config", hidden=True)] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print what would be judged, and how long; write nothing.")
    ] = False,
) -> None:
    """Judge every committed image (blank, noise, prompt, identity); rerun to resume."""
    from dppp.foundation.config import with_updates
    from dppp.trainer.curation.job import CurationFailed, check_model, plan_curation, run_curate

    if config is not None and config_option is not None:
        raise UserError("give the experiment YAML once: as CONFIG (or the older --config), not both")
    experiment = load_config(
        config or config_option, sets, endpoint_url=endpoint_url, storage=("curate.storage",)
    )
    settings = with_updates(experiment.curate, "curate", model=model, workers=workers)
    console = Console()
    if dry_run:
        plan = plan_curation(url, check_model(settings))
        print_plan(console, plan, settings)
        return
    try:
        summary = run_curate(url, settings, ray_address=ray_address)
    except CurationFailed as failed:
        for index, error in sorted(failed.summary.failed.items()):
            console.print(f"  shard {index:06d}: {error}", highlight=False)
        raise
    print_summary(console, summary)


def print_plan(console, plan, settings) -> None:
    from dppp.trainer.curation.job import CPU_IMAGES_PER_S_PER_WORKER, GPU_IMAGES_PER_S_PER_WORKER

    todo = plan.todo
    images = sum(r.count for r in todo)
    console.print(
        f"curate {plan.storage.url}: {len(plan.records)} committed shard(s), {plan.images} images; "
        f"{len(todo)} shard(s) ({images} images) to judge, {len(plan.done)} already judged "
        f"(run {plan.run}). Nothing written.",
        highlight=False,
    )
    workers = settings.workers or 1
    console.print(
        f"expected: {images / (CPU_IMAGES_PER_S_PER_WORKER * workers):.0f} s on {workers} CPU worker(s) "
        f"({CPU_IMAGES_PER_S_PER_WORKER:.0f} images/s each, measured); about "
        f"{images / (GPU_IMAGES_PER_S_PER_WORKER * workers):.0f} s on {workers} GPU(s) "
        f"({GPU_IMAGES_PER_S_PER_WORKER:.0f} images/s each, estimated; docs/curation.md)",
        highlight=False,
    )


def print_summary(console, summary) -> None:
    counts = summary.counts
    table = Table(title=f"dppp curate -> {summary.url}", show_header=False)
    table.add_row(
        "shards",
        f"{summary.shards_done} judged, {summary.shards_skipped} already judged, {summary.shards_total} committed",
    )
    table.add_row(
        "images", f"{counts.samples} ({summary.images} judged now, {summary.images_per_s:.1f} images/s)"
    )
    table.add_row("kept", f"{counts.kept} ({100 * counts.kept / max(counts.samples, 1):.1f}%)")
    rejected = sum(counts.rejected.values())
    table.add_row("rejected", f"{rejected} ({100 * rejected / max(counts.samples, 1):.1f}%)")
    for reason, n in sorted(counts.rejected.items()):
        table.add_row(f"  {reason}", str(n))
    table.add_row("wall time", f"{summary.wall_s:.1f} s")
    table.add_row("file", f"{summary.url.rstrip('/')}/curation.parquet")
    if summary.sheet:
        table.add_row("rejects", summary.sheet)
    console.print(table)
