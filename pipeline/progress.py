"""The progress of `dppp generate`: a live bar (shards, images, images/s, ETA) on a terminal, plain lines
at a steady interval in a log (foundation/progress_lines.py), and the lines about the run itself."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dppp.foundation.progress_lines import ProgressLines, logging_to_file, progress_every


class GenerateProgress:
    """`shards` and `images` are this run's work; `already`: shards committed before it (a resume), so
    the plain lines count the whole plan. `every_s`: the lines' interval (None: --progress-every's
    default); `plain`: lines instead of the bar (default: when stdout is not a terminal)."""

    def __init__(
        self,
        shards: int,
        images: int,
        *,
        enabled: bool = True,
        already: int = 0,
        every_s: float | None = None,
        plain: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
    ):
        self.images_total = images
        self.images = 0
        self.shards = 0
        self.already = already
        self.enabled = enabled
        self.clock = clock
        self.started = clock()
        plain = logging_to_file() if plain is None else plain
        self.lines = (
            ProgressLines(
                "generate",
                already + shards,
                "shards",
                every_s=progress_every(every_s),
                clock=clock,
                write=write,
            )
            if enabled and plain
            else None
        )
        self.write = write or (lambda line: print(line, flush=True))
        self.plain = plain
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
            disable=not enabled or plain or not sys.stderr.isatty(),
        )
        self.task = self.progress.add_task("shards", total=shards, images=0, images_total=images, rate=0.0)

    def __enter__(self) -> GenerateProgress:
        if self.already and self.enabled:
            self.say(f"resumed: {self.already} shards already committed")
        self.progress.start()
        self.tick()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, images: int) -> None:
        self.images += images
        self.shards += 1
        elapsed = self.progress.tasks[0].elapsed or 0.0
        rate = self.images / elapsed if elapsed > 0 else 0.0
        self.progress.update(self.task, advance=1, images=self.images, rate=rate)
        self.tick()

    def tick(self) -> None:
        """A plain line if its interval has passed: called on every poll of the job's loop, so lines keep
        coming while no shard commits (a slow model load, minutes-long shards)."""
        if self.lines is None:
            return
        elapsed = self.clock() - self.started
        rate = f", {self.images / elapsed:.1f} images/s" if elapsed > 0 and self.images else ""
        self.lines.update(self.already + self.shards, f"{self.images}/{self.images_total} images{rate}")

    def say(self, message: str) -> None:
        """A plain line in a log, a line above the bar on a terminal."""
        if self.plain:
            self.write(message)
        else:
            self.console.print(message)

    def note(self, message: str) -> None:
        """A line above the bar about the run itself (an actor or node lost, a replacement joined)."""
        if self.enabled:
            self.console.print(message)

    def fail(self, shard: int, error: str) -> None:
        self.console.print(f"[red]shard {shard:06d} failed every attempt:[/red] {error}")
