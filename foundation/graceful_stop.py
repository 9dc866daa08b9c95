"""Stopping a long job on SIGTERM (how a cluster preempts) or SIGINT (Ctrl-C) without losing or
half-writing anything: the job stops taking work, lets what is in flight finish (or abandons it) within a
bounded time, says where it stopped in one line and exits 128 + the signal (143, 130).

    with graceful_stop() as stop:
        for item in work:
            if stop.requested:
                raise stop.interrupted(f"stopped: {done} shards committed, {left} left; rerun to resume")
            ...

The first signal sets `stop.requested`; a second one sets `stop.urgent` too: the job abandons what is in
flight at once. Handlers are Python's, so they run in the main thread between bytecodes: a job polls the
flag (a blocking wait needs a timeout). Outside the main thread (a test running a job in a thread) no
handler can be installed and the stop never triggers.

Ray's C++ core installs absl's failure-signal handler for SIGTERM when ray.init starts it in the driver: it
printed `*** SIGTERM received ... PC: @ 0x...` with a stack dump and killed the process. start_ray
(foundation/ray_cluster.py) therefore calls `reinstall()` after ray.init, which puts the open scope's
handlers back on top of Ray's.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dppp.foundation.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_GRACE_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds; SIGKILL follows it
GRACE_ENV = "DPPP_STOP_GRACE_S"


def grace_s() -> float:
    """How long a stopping job lets its work in flight finish: DPPP_STOP_GRACE_S, else 30 s."""
    value = os.environ.get(GRACE_ENV, "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_GRACE_S
    except ValueError:
        return DEFAULT_GRACE_S


class StopRequest:
    """What the signals asked for so far: `requested` (stop taking work), `urgent` (abandon in-flight work
    now: a second signal), `signum` (the first signal's number)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.urgent = False
        self._event = threading.Event()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, signum: int) -> None:
        """What a handler does; also callable directly (a job told to stop by its own logic, a test)."""
        if self.signum is None:
            self.signum = signum
        else:
            self.urgent = True
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early on a stop request (from another thread)."""
        return self._event.wait(timeout)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    def interrupted(self, message: str) -> Interrupted:
        """The error the CLI prints as `message` alone (one line, no traceback) and exits with."""
        return Interrupted(message, self.exit_code)


_active: list[tuple[StopRequest, dict[int, object]]] = []  # open scopes, innermost last: (request, saved)


def _handler(signum: int, _frame) -> None:
    if _active:
        _active[-1][0].request(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Turn SIGTERM and SIGINT into a StopRequest for the duration of the block (in the main thread);
    the previous handlers come back afterwards. Nested scopes share the outermost one's request."""
    if _active:  # a job inside a job (generate's batch-size probe, a test's own scope): one request
        yield _active[-1][0]
        return
    request = StopRequest()
    if not _in_main_thread():
        yield request
        return
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _active.append((request, saved))
    try:
        reinstall()
        yield request
    finally:
        _active.pop()
        for signum, previous in saved.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def reinstall() -> None:
    """Put the open scope's handlers back: after anything that installs its own (ray.init)."""
    if _active and _in_main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)
