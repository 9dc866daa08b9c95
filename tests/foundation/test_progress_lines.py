"""Plain progress lines (foundation/progress_lines.py) and the graceful stop's signal handling
(foundation/graceful_stop.py), with an injected clock and real signals sent to this process."""

from __future__ import annotations

import os
import signal

from dppp.foundation.graceful_stop import grace_s, graceful_stop
from dppp.foundation.progress_lines import ProgressLines, format_duration, progress_every


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_at_each_interval_with_rate_and_eta():
    clock, printed = Clock(), []
    lines = ProgressLines("generate", 10, "shards", every_s=30, clock=clock, write=printed.append)
    assert not lines.update(2)  # the start: the rate counts from here (2 were done before this run)
    clock.now += 29
    assert not lines.update(3)
    clock.now += 1
    assert lines.update(5, "120/240 images")
    assert printed == ["generate: 5/10 shards (50%), 120/240 images, 0.1 shards/s, ETA 50s"]
    clock.now += 10
    assert not lines.update(6)  # 10 s since the last line
    clock.now += 20
    assert lines.update(6)
    assert printed[-1] == "generate: 6/10 shards (60%), 0.0667 shards/s, ETA 1m00s"


def test_no_rate_yet_says_eta_unknown_and_zero_interval_is_off():
    clock, printed = Clock(), []
    lines = ProgressLines("train", 616, "steps", every_s=5, clock=clock, write=printed.append)
    lines.update(0)
    clock.now += 5
    lines.update(0, "starting workers")
    assert printed == ["train: 0/616 steps (0%), starting workers, ETA unknown"]
    off = ProgressLines("train", 616, "steps", every_s=0, clock=clock, write=printed.append)
    off.update(0)
    clock.now += 1000
    assert not off.update(10) and len(printed) == 1


def test_interval_from_flag_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("DPPP_PROGRESS_EVERY", raising=False)
    assert progress_every() == 30
    monkeypatch.setenv("DPPP_PROGRESS_EVERY", "5")
    assert progress_every() == 5 and progress_every(2) == 2
    assert [format_duration(s) for s in (4.4, 185, 7620)] == ["4s", "3m05s", "2h07m"]


def test_signals_become_a_stop_request_and_handlers_come_back(monkeypatch):
    monkeypatch.setenv("DPPP_STOP_GRACE_S", "7")
    assert grace_s() == 7
    before = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)  # Python's own, or what an earlier test (Ray) put there
    with graceful_stop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5) and stop.requested and not stop.urgent and stop.exit_code == 143
        os.kill(os.getpid(), signal.SIGINT)  # a second signal: hurry
        assert stop.wait(5) and stop.urgent and stop.exit_code == 143  # the first signal decides
        with graceful_stop() as inner:
            assert inner is stop
        error = stop.interrupted("stopped: 1 shards committed, 2 left; rerun to resume")
        assert error.exit_code == 143 and str(error).startswith("stopped: 1 shards")
    assert signal.getsignal(signal.SIGTERM) is before
    with graceful_stop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5) and stop.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before_int  # the handler from before is back
