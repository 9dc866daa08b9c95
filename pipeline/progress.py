"""The live progress bar of `dppp generate`: shards, images, images/s and ETA."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class GenerateProgress:
    def __init__(self, shards: int, images: int, *, enabled: bool = True):
        self.images_total = images
        self.images = 0
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards  {task.fields[images]}/{task.fields[images_total]} images"),
            TextColumn("{task.fields[rate]:.1f} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled or not sys.stderr.isatty(),
        )
        self.task = self.progress.add_task("shards", total=shards, images=0, images_total=images, rate=0.0)

    def __enter__(self) -> GenerateProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, images: int) -> None:
        self.images += images
        elapsed = self.progress.tasks[0].elapsed or 0.0
        rate = self.images / elapsed if elapsed > 0 else 0.0
        self.progress.update(self.task, advance=1, images=self.images, rate=rate)

    def note(self, message: str) -> None:
        """A line above the bar about the run itself (an actor or node lost, a replacement joined)."""
        if self.enabled:
            self.console.print(message)

    def fail(self, shard: int, error: str) -> None:
        self.console.print(f"[red]shard {shard:06d} failed every attempt:[/red] {error}")
