"""`dppp shards ...`: list, verify, summarise and look at shards wherever they live (path, file://, s3://).

Thin shells over dataset/listing.py, verify.py, browse.py and index.py. Every command streams: records, one shard at a time, or the index.
The endpoint and credentials of s3:// URLs come from --endpoint-url or the standard AWS environment.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dppp.commands.common import EndpointOption, ProgressEveryOption
from dppp.foundation.errors import UserError

# Only what `dppp --help` loads anyway is imported at the top: the library modules a command calls (pydantic
# configs, numpy, pyarrow, torch, ray, even rich.progress and the storage helpers) are imported inside it,
# so `dppp --help` and a bad flag stay fast.

app = typer.Typer(
    help="List, verify, summarise and look at dataset shards (local, file:// or s3://).", no_args_is_help=True
)

UrlArg = Annotated[
    str, typer.Argument(help="Dataset root: a local path, file:///path or s3://bucket/prefix.")
]


MemberLimitOption = Annotated[
    list[str] | None,
    typer.Option(
        "--member-limit",
        help="Largest member read, KIND=SIZE (repeatable; KIND: json, txt, cls, image), e.g. image=256MiB. "
        "Defaults: json 1MiB, txt 64KiB, cls 1KiB, image 64MiB (docs/shards.md).",
    ),
]


def _config(endpoint_url: str | None, member_limits: list[str] | None = None):
    from dppp.dataset.limits import ShardStorageConfig, limits_from_flags

    return ShardStorageConfig(endpoint_url=endpoint_url, member_limits=limits_from_flags(member_limits))


def _console(stderr: bool = False):
    return Console(stderr=stderr, soft_wrap=False, width=None if sys.stdout.isatty() else 120)


def _size(n: int | None) -> str:
    from dppp.foundation.units import format_bytes

    return format_bytes(n)


@contextmanager
def _progress(description: str, unit_bytes: bool, every_s: float | None = None) -> Iterator:
    """A rich progress bar on stderr (only on a terminal), or plain lines every `every_s` seconds when
    stdout is not a terminal (foundation/progress_lines.py): yields (set_total, advance, listed);
    `listed(n)` shows the objects listed so far, until the total is set."""
    from dppp.foundation.progress_lines import logging_to_file

    if logging_to_file():
        with _progress_lines(description, unit_bytes, every_s) as callbacks:
            yield callbacks
        return

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counter = (DownloadColumn(), TransferSpeedColumn()) if unit_bytes else (MofNCompleteColumn(),)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counter,
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    task = progress.add_task(description, total=None)
    seen = 0

    def listed(n: int) -> None:
        nonlocal seen
        seen += n
        progress.update(task, description=f"{description}: {seen} objects listed")

    def set_total(total: int) -> None:
        progress.update(task, total=total, description=description)

    with progress:
        yield set_total, (lambda n=1: progress.advance(task, n)), listed


@contextmanager
def _progress_lines(description: str, unit_bytes: bool, every_s: float | None) -> Iterator:
    from dppp.foundation.progress_lines import ProgressLines, progress_every

    lines = ProgressLines(
        description,
        0,
        "objects",
        every_s=progress_every(every_s),
        amount=(lambda n: _size(int(n))) if unit_bytes else None,
    )
    done = 0

    def set_total(total: int) -> None:
        lines.total = total
        lines.update(done)

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        lines.update(done)

    yield set_total, advance, lambda n: None


@app.command("ls")
def ls(url: UrlArg, endpoint_url: EndpointOption = None) -> None:
    """A table of shards (samples, identities, bytes, committed, or missing from the plan) and totals."""
    from dppp.dataset.listing import list_shards

    listing = list_shards(url, _config(endpoint_url))
    table = Table(title=listing.url, show_footer=True)
    table.add_column("shard", footer="total")
    table.add_column("samples", justify="right", footer=str(listing.total_samples))
    table.add_column("identities", justify="right", footer=str(listing.total_identities))
    table.add_column("bytes", justify="right", footer=_size(listing.total_bytes))
    missing = f" ({listing.missing} missing)" if listing.missing else ""
    table.add_column("committed", footer=f"{listing.committed}/{len(listing.rows)}{missing}")
    colours = {"yes": "{}", "no": "[yellow]{}[/]"}
    for row in listing.rows:
        state = colours.get(row.state, "[red]{}[/]").format(row.state)
        table.add_row(
            row.tar,
            str(row.samples if row.samples is not None else "-"),
            str(row.identities if row.identities is not None else "-"),
            _size(row.bytes),
            state,
        )
    _console().print(table)


@app.command("verify")
def verify(
    url: UrlArg,
    deep: Annotated[bool, typer.Option("--deep", help="Also decode every image.")] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Processes verifying shards at once; 0: auto (threads on an object store, one process "
            "per CPU for a local dataset of 256 MiB and more).",
        ),
    ] = 0,
    endpoint_url: EndpointOption = None,
    member_limit: MemberLimitOption = None,
    progress_every: ProgressEveryOption = None,
) -> None:
    """Recompute checksums, counts, members and index fragments against the records. Exit 1 on any problem."""
    from dppp.foundation.graceful_stop import graceful_stop
    from dppp.pipeline.verify import verify_dataset

    with (
        graceful_stop() as stop,
        _progress("verify", unit_bytes=True, every_s=progress_every) as (set_total, advance, listed),
    ):
        report = verify_dataset(
            url,
            deep=deep,
            config=_config(endpoint_url, member_limit),
            progress=advance,
            on_total=set_total,
            workers=workers,
            listed=listed,
            stop=stop,
        )
    if report.stopped:
        raise stop.interrupted(
            f"stopped: {report.verified} of {report.committed} committed shards verified "
            f"({len(report.checks)} with problems so far); rerun to verify"
        )
    console = _console()
    if report.checks:  # clean shards are only counted: a dataset of 100k shards would print 100k rows
        table = Table(title=f"{report.url} ({'deep' if deep else 'checksums, counts, members'}): problems")
        for name, justify in (
            ("object", "left"),
            ("samples", "right"),
            ("bytes", "right"),
            ("status", "left"),
            ("problems", "left"),
        ):
            table.add_column(name, justify=justify)
        for check in report.checks:
            problems = "; ".join(f"{kind}: {message}" for kind, message in check.problems)
            table.add_row(
                check.name, str(check.samples), _size(check.bytes), f"[red]{check.status}[/]", problems
            )
        console.print(table)
    for problem in report.dataset_problems:
        console.print(f"[red]problem:[/] {problem}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    what = f"{report.verified} shards, {report.samples} samples"
    if report.ok:
        console.print(
            f"[green]OK[/]: {what} verified ({_size(report.bytes)} of tars, "
            f"{'deep' if deep else 'checksums, counts, members, index fragments'})"
        )
        return
    bad = len(report.checks) + len(report.dataset_problems)
    console.print(f"[red]FAILED[/]: {bad} problem(s) in {report.url} ({what} verified)")
    raise typer.Exit(1)


@app.command("stats")
def stats(
    url: UrlArg,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write bar charts to this PNG.")] = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Attribute distributions, cameras and per-identity view counts, from index.parquet."""
    from dppp.pipeline.browse import dataset_stats, plot_stats

    result = dataset_stats(url, _config(endpoint_url))
    console = _console()
    console.print(
        f"[bold]{result.url}[/]: {result.samples} samples, {result.identities} identities, "
        f"{result.shards} shards"
    )
    if result.curation is not None:
        counts = result.curation
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items())) or "none"
        console.print(
            f"curation (curation.parquet): {counts.kept} kept, {counts.samples - counts.kept} rejected "
            f"({rejected})",
            highlight=False,
        )
    views = Table(title="views per identity")
    views.add_column("views", justify="right")
    views.add_column("identities", justify="right")
    for k, count in result.views_per_identity:
        views.add_row(str(k), str(count))
    console.print(views)
    table = Table(title="attributes")
    for name in ("attribute", "value", "samples", "share"):
        table.add_column(name, justify="right" if name in ("samples", "share") else "left")
    cameras = [] if "camera" in result.attributes else [("camid", [(str(c), n) for c, n in result.cameras])]
    for name, counts in [*cameras, *result.attributes.items()]:  # the camera attribute is the camid
        for i, (value, count) in enumerate(counts):
            table.add_row(
                name if i == 0 else "", value, str(count), f"{100 * count / max(result.samples, 1):.1f}%"
            )
        if result.hidden.get(name):  # e.g. a bag's colour where there is no bag: not counted above
            unseen = result.hidden[name]
            table.add_row(
                "",
                "[dim](not visible)[/]",
                f"[dim]{unseen}[/]",
                f"[dim]{100 * unseen / result.samples:.1f}%[/]",
            )
    console.print(table)
    if plot is not None:
        plot_stats(result, plot)
        console.print(f"plot written to {plot}")


@app.command("grid")
def grid(
    url: UrlArg,
    out: Annotated[Path, typer.Option("--out", help="PNG/JPEG file for the contact sheet.")],
    shard: Annotated[int | None, typer.Option("--shard", help="Only this shard index.")] = None,
    pid: Annotated[int | None, typer.Option("--pid", help="Only this identity.")] = None,
    n: Annotated[int, typer.Option("--n", help="At most this many samples.")] = 64,
    columns: Annotated[int, typer.Option("--columns", help="Images per row.")] = 8,
    endpoint_url: EndpointOption = None,
    member_limit: MemberLimitOption = None,
) -> None:
    """A contact sheet captioned with pid / camid: the fastest way to see what a dataset looks like."""
    from dppp.pipeline.browse import contact_grid, save_image

    if shard is not None and pid is not None:
        raise UserError("give --shard or --pid, not both")
    config = _config(endpoint_url, member_limit)
    sheet, count = contact_grid(url, shard=shard, pid=pid, n=n, columns=columns, config=config)
    save_image(sheet, out)
    typer.echo(f"{count} samples -> {out} ({sheet.width}x{sheet.height})")


@app.command("show")
def show(
    url: UrlArg,
    key: Annotated[str, typer.Argument(help="Sample key, e.g. p000012_v003.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the sample's image to this file.")] = None,
    endpoint_url: EndpointOption = None,
    member_limit: MemberLimitOption = None,
) -> None:
    """One sample's metadata and prompt (and its image with --out)."""
    from dppp.foundation.storage.local import write_file
    from dppp.pipeline.browse import show_sample

    sample = show_sample(url, key, _config(endpoint_url, member_limit))
    console = _console()
    console.print(
        f"[bold]{sample.key}[/] in {sample.shard}: pid {sample.pid}, {sample.image_ext}, "
        f"{len(sample.image_bytes)} bytes"
    )
    console.print(f"[bold]prompt:[/] {sample.prompt}")
    typer.echo(json.dumps(sample.metadata, indent=2, sort_keys=True, ensure_ascii=False))
    if out is not None:
        write_file(out, sample.image_bytes)
        typer.echo(f"image written to {out}")


@app.command("index")
def index(
    url: UrlArg,
    from_tars: Annotated[
        bool,
        typer.Option(
            "--from-tars",
            help="Rebuild every shard's index fragment from its "
            "tar first (after fragment damage); reads the whole dataset.",
        ),
    ] = False,
    endpoint_url: EndpointOption = None,
    member_limit: MemberLimitOption = None,
    progress_every: ProgressEveryOption = None,
) -> None:
    """Rebuild index.parquet by merging the shards' index fragments (no tar is read, unless --from-tars or
    for shards committed before fragments existed, which get theirs once)."""
    from dppp.dataset.index import rebuild_index

    with _progress("index", unit_bytes=False, every_s=progress_every) as (set_total, advance, _):
        rows = rebuild_index(
            url,
            _config(endpoint_url, member_limit),
            from_tars=from_tars,
            progress=advance,
            on_total=set_total,
        )
    typer.echo(f"index.parquet: {rows} rows")
