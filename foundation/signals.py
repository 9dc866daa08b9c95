"""SIGTERM as an error a command reports in one line, after its `with` blocks have unwound.

Python's default for SIGTERM ends the process where it stands: no `finally` runs, so the worker processes
of a ProcessPoolExecutor are left running, orphaned, and temp files stay. Inside `stop_on_sigterm`, SIGTERM
raises `Terminated` in the main thread instead. A few steps must not be cut in half (starting a worker
process: a child whose parent dies while handing it its start-up data prints a traceback of its own), so
`sigterm_deferred` holds the exception back until such a step is done.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from foundation.errors import ReportedError


class Terminated(ReportedError):
    """The command was sent SIGTERM and stopped. Exit 128 + 15, as a shell reports a process ended by it."""

    exit_code = 128 + signal.SIGTERM


_state = {"deferring": 0, "pending": None}


@contextmanager
def stop_on_sigterm(what: str) -> Iterator[None]:
    """While inside, SIGTERM raises Terminated ("<what> stopped by SIGTERM ...") in the main thread."""

    def stop(signum, frame):
        error = Terminated(f"{what} stopped by SIGTERM before it finished; rerun it to {what} the rest")
        if _state["deferring"]:
            _state["pending"] = error
            return
        raise error

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _state["pending"] = None


@contextmanager
def sigterm_deferred() -> Iterator[None]:
    """A step SIGTERM must not cut in half: a Terminated it raises waits until the step is done. Main
    thread only (where Python runs signal handlers)."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        if not _state["deferring"] and (pending := _state["pending"]) is not None:
            _state["pending"] = None
            raise pending
