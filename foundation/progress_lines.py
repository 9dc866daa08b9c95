"""Progress for batch jobs: when stdout is not a terminal (a log file, a cluster job's output), a live bar
prints nothing until the end, so long jobs print a plain line at a steady interval instead:

    generate: 12/24 shards (50%), 1180/2360 images, 41.2 images/s, ETA 29s

One vocabulary for every command (generate, verify, train, curate): `--progress-every SECONDS`, else the
DPPP_PROGRESS_EVERY environment variable, else 30 s; 0 turns the lines off. A job calls `update()` as
often as it likes (each poll of its loop); a line goes out once `every_s` has passed since the last.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

DEFAULT_EVERY_S = 30.0
EVERY_ENV = "DPPP_PROGRESS_EVERY"


def progress_every(given: float | None = None) -> float:
    """The interval between lines: `given` (the --progress-every flag), else DPPP_PROGRESS_EVERY, else 30 s."""
    if given is not None:
        return max(0.0, given)
    value = os.environ.get(EVERY_ENV, "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_EVERY_S
    except ValueError:
        return DEFAULT_EVERY_S


def logging_to_file() -> bool:
    """Whether plain lines are the progress to show: stdout is not a terminal."""
    return not sys.stdout.isatty()


def format_duration(seconds: float) -> str:
    """'42s', '3m05s', '2h07m': short enough for a log line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLines:
    """Plain progress lines for `label`'s `total` units: done / total, rate, ETA, every `every_s` seconds.

    `clock` and `write` are injectable (tests use a fake clock and a list). The rate counts only what
    this run did (`done` minus what was done when it started: a resumed run's skipped shards are not
    progress), over the time since the first update."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str,
        *,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
        amount: Callable[[float], str] | None = None,
    ):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.amount = amount  # how to write a quantity (bytes as '1.2 GiB'); None: 'N unit'
        self._lock = threading.Lock()  # verify's progress comes from its reader threads
        self.clock = clock
        self.write = write or (lambda line: print(line, file=sys.stdout, flush=True))
        self.started: float | None = None
        self.start_done = 0
        self.last_line: float | None = None

    def update(self, done: int, detail: str = "", *, force: bool = False) -> bool:
        """Print a line if `every_s` has passed since the last one (or the start), or `force`; returns
        whether it did. `detail`: what else the line says (images, the loss)."""
        with self._lock:
            now = self.clock()
            if self.started is None:
                self.started, self.start_done, self.last_line = now, done, now
            if self.every_s <= 0 or not (force or now - self.last_line >= self.every_s):
                return False
            self.last_line = now
            self.write(self.line(done, detail, now))
            return True

    def line(self, done: int, detail: str, now: float) -> str:
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        if self.amount:
            parts = [f"{self.label}: {self.amount(done)} of {self.amount(self.total)}{share}"]
        else:
            parts = [f"{self.label}: {done}/{self.total} {self.unit}{share}"]
        if detail:
            parts.append(detail)
        elapsed = now - (self.started if self.started is not None else now)
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{self.amount(rate)}/s" if self.amount else f"{rate:.3g} {self.unit}/s")
            parts.append(f"ETA {format_duration((self.total - done) / rate)}")
        else:
            parts.append("ETA unknown")
        return ", ".join(parts)
