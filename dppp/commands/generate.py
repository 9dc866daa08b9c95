"""`dppp generate`: render the configured identities into committed shards (a Ray batch job)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dppp.commands.common import ConfigArg, EndpointOption, ProgressEveryOption, SetOption, load_config

# Only what `dppp --help` loads anyway is imported at the top: the library modules a command calls (pydantic
# configs, numpy, pyarrow, torch, ray, even rich.progress and the storage helpers) are imported inside it,
# so `dppp --help` and a bad flag stay fast.


def generate(
    config: ConfigArg,
    out: Annotated[str | None, typer.Option(help="Output: a local path, file:// or s3:// URL.")] = None,
    identities: Annotated[int | None, typer.Option(help="Number of identities to render.")] = None,
    ids_per_shard: Annotated[int | None, typer.Option(help="Whole identities per shard.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Renderer actors (default: one per GPU, else per CPU).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster (default: RAY_ADDRESS, else a local instance).")
    ] = None,
    sets: SetOption = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a dataset made from another config at --out.")
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(help="Verify the dataset (deep) and render every damaged or missing shard again."),
    ] = False,
    extend: Annotated[
        bool,
        typer.Option(help="Grow a dataset made with fewer identities (--identities) and the same config."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan and what it does to the output; write nothing.")
    ] = False,
    progress_every: ProgressEveryOption = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Render identities with the configured renderer into WebDataset shards; rerun to resume."""
    from dppp.foundation.config import with_updates
    from dppp.foundation.redaction import redact_message
    from dppp.foundation.storage.base import StorageError
    from dppp.foundation.storage.urls import open_storage
    from dppp.foundation.units import format_bytes
    from dppp.pipeline.capacity import estimate_render_hours
    from dppp.pipeline.dataset_change import plan_change
    from dppp.pipeline.generate import GenerationFailed, build_plan, run_generate
    from dppp.pipeline.leases import JobIdentity

    experiment = load_config(config, sets, endpoint_url=endpoint_url, storage=("generate.storage",))
    gen = with_updates(
        experiment.generate,
        "generate",
        out=out,
        identities=identities,
        ids_per_shard=ids_per_shard,
        workers=workers,
    )
    console = Console()
    if dry_run:
        plan = build_plan(gen)
        console.print(
            f"plan for [bold]{gen.out}[/bold]: {gen.identities} identities, {plan.images} images "
            f"({plan.images / gen.identities:.2f} views/identity), {len(plan.shards)} shards of "
            f"{gen.ids_per_shard} identities, about {format_bytes(plan.estimated_bytes())} "
            f"({gen.output.format}, {gen.output.height}x{gen.output.width}). Nothing written."
        )
        estimate = estimate_render_hours(gen.renderer, plan.images)
        console.print(
            estimate.describe(plan.images, len(plan.shards))
            if estimate
            else "no measured rendering rate applies to this model (benchmarks/bench_diffusers.py measures one)"
        )
        # what the run would do to the output, refused as the run would refuse it (exit 2)
        try:
            change = plan_change(
                plan,
                open_storage(gen.out, gen.storage),
                job=JobIdentity.current(),
                overwrite=overwrite,
                extend=extend,
                repair=repair,
            )
        except StorageError as exc:
            if overwrite or extend or repair:
                raise
            # a plan (and its GPU-hours) is worth having where the output cannot be reached yet
            console.print(f"the output was not looked at: {exc}")
            return
        for line in change.lines:
            console.print(line)
        return
    try:
        summary = run_generate(
            gen,
            ray_address=ray_address,
            overwrite=overwrite,
            repair=repair,
            extend=extend,
            progress_every=progress_every,
        )
    except GenerationFailed as failed:
        summary = failed.summary
        print_summary(console, summary)
        if summary.failed:
            console.print(f"[red]{len(summary.failed)} shard(s) failed every attempt:[/red]")
            for index, error in sorted(summary.failed.items()):
                console.print(f"  shard {index:06d}: {redact_message(error)}")
        if summary.stopped:
            console.print(f"[red]stopped:[/red] {redact_message(summary.stopped)}")
        console.print("Committed shards stay valid; rerun the same command to render the rest.")
        raise typer.Exit(failed.exit_code) from None
    print_summary(console, summary)


def print_summary(console, summary) -> None:
    from dppp.foundation.units import format_bytes

    table = Table(title=f"dppp generate -> {summary.out}", show_header=False)
    table.add_row(
        "shards",
        f"{summary.shards_done} rendered, {summary.shards_by_others} done by other jobs, "
        f"{summary.shards_skipped} already committed, {summary.shards_total} in plan",
    )
    table.add_row("images", f"{summary.images} ({summary.images_per_s:.1f} images/s)")
    table.add_row("bytes", format_bytes(summary.bytes))
    table.add_row("wall time", f"{summary.wall_s:.1f} s")
    if summary.phases:
        phases = summary.phases
        table.add_row(
            "driver",
            f"plan {phases.get('plan_s', 0):.1f} s, actors {phases.get('schedule_s', 0):.1f} s, "
            f"index {phases.get('index_s', 0):.1f} s",
        )
    for name, busy in sorted(summary.busy.items()):
        table.add_row(f"{name} busy", f"{busy:.0%}")
    if summary.pool_sizes:
        nodes = {node for worker_nodes in summary.nodes.values() for node in worker_nodes}
        on = f" on {len(nodes)} node(s)" if nodes else ""
        table.add_row("actors", pool_history(summary.pool_sizes) + on)
    for loss in summary.losses:
        node = f"node {loss.node[:8]}" + (" (dead)" if loss.node_dead else "")
        what = "while loading its renderer" if loss.while_loading else f"{loss.shards} shard(s) re-queued"
        table.add_row(f"{loss.worker} lost", f"at {loss.at_s:.1f} s on {node}: {what}")
    if summary.nodes_lost:
        table.add_row("nodes lost", ", ".join(node[:8] for node in summary.nodes_lost))
    if summary.retries:
        table.add_row("shards re-run", str(summary.retries))
    for note in summary.notes:
        table.add_row("note", note)
    console.print(table)


def pool_history(sizes: list[tuple[float, int]]) -> str:
    """Actors with a loaded renderer over the run, start-up ramps folded: '2 from 1.2 s, 1 from 10.4 s'."""
    kept = [
        (at, count)
        for i, (at, count) in enumerate(sizes)
        if i > 0 and not (sizes[i - 1][1] < count < (sizes[i + 1][1] if i + 1 < len(sizes) else -1))
    ]
    return ", ".join(f"{count} from {at:.1f} s" for at, count in kept) or "none loaded"
