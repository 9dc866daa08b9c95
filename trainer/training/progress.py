"""What the driver shows while Ray Train runs (`dppp train`, `dppp pretrain`): a live bar on a terminal,
plain lines at a steady interval in a log (foundation/progress_lines.py), both from the progress board
that rank 0 posts its records to (trainer/training/train.py); and a graceful stop on SIGTERM / SIGINT.

The board is polled every half second. A poll that fails or times out (a driver starved of CPU by its
own workers) keeps the last state it had: the bar once sat at "0/616 starting workers" for minutes while
training was at step 524, each failed poll resetting it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dppp.foundation.graceful_stop import StopRequest, grace_s
from dppp.foundation.progress_lines import ProgressLines, logging_to_file, progress_every

# torch and ray are imported inside stop_requested, the workers' side: the driver imports this module for
# TrainWatch before Ray starts (trainer/training/train.py).

_POLL_S = 0.5


def step_info(state: dict[str, Any]) -> str:
    """The bar's and the line's detail: where the workers are, from the board's latest records."""
    step = state.get("step")
    if step:
        loss = step.get("loss", float("nan"))
        return f"phase {step['phase']} epoch {step['epoch']} loss {loss:.4f} {step.get('images_per_s', 0):.0f} img/s"
    if state.get("starts"):
        start = state["starts"][-1]
        return f"training from step {start.get('step', 0)}" if start.get("resumed") else "training"
    return "starting workers"


def start_line(start: dict[str, Any], *, restart: bool) -> str:
    """What one worker-group start says: a fresh start, a resume (and from where), a restart."""
    step = start.get("step", 0)
    if restart:
        line = (
            f"training workers restarted (a worker or its node was lost): resuming from the checkpoint at "
            f"step {step}"
        )
    elif start.get("resumed"):
        line = f"resumed from step {step} (phase {start.get('phase')}, epoch {start.get('epoch')})"
    else:
        line = "started a new run"
    line += f" with {start.get('world')} worker(s); the run ends at step {start.get('total_steps', '?')}"
    moved = start.get("replanned")
    if moved:
        line += (
            f"; the worker or loader-process count changed, so the resumed epoch is planned afresh: batch {moved['batch']} "
            f"of {moved['of']} continues as batch {moved['now_batch']} of {moved['now_of']}"
        )
    return line


class TrainWatch:
    """Polls the board while `thread` (Ray Train's fit) runs; returns when it ends or a stop is requested.
    `poll()` gives the board's state or None (the caller keeps the last good one)."""

    def __init__(
        self,
        poll: Callable[[], dict[str, Any] | None],
        steps: int,
        description: str,
        *,
        progress: bool,
        stop: StopRequest,
        every_s: float | None = None,
        plain: bool | None = None,
        write: Callable[[str], None] | None = None,
    ):
        self.poll, self.steps, self.description, self.stop = poll, steps, description, stop
        self.progress = progress
        self.plain = logging_to_file() if plain is None else plain
        self.write = write or (lambda line: print(line, flush=True))
        self.lines = ProgressLines("train", steps, "steps", every_s=progress_every(every_s), write=self.write)
        self.state: dict[str, Any] = {"starts": []}
        self.starts_seen = 0

    def new_starts(self) -> list[str]:
        """What each worker-group start since the last look says (a new run, a resume and from where, a
        restart); the step total follows the newest start's own count (its worker count)."""
        lines = []
        for start in self.state.get("starts", [])[self.starts_seen :]:
            lines.append(start_line(start, restart=self.starts_seen > 0))
            if start.get("total_steps"):
                self.steps = self.lines.total = int(start["total_steps"])
            self.starts_seen += 1
        return lines

    @property
    def step(self) -> int:
        return int(self.state.get("step_now", 0))

    def refresh(self) -> None:
        state = self.poll()
        if state:
            self.state = state

    def watch(self, thread: threading.Thread) -> None:
        if not self.progress:
            while thread.is_alive() and not self.stop.requested:
                thread.join(_POLL_S)
            return
        if self.plain:
            self.write(f"training on {self.description}")
            while thread.is_alive() and not self.stop.requested:
                thread.join(_POLL_S)
                self.refresh()
                for line in self.new_starts():
                    self.write(line)
                self.lines.update(self.step, step_info(self.state))
            return
        self._watch_with_bar(thread)

    def _watch_with_bar(self, thread: threading.Thread) -> None:
        console = Console(stderr=True)
        console.print(f"training on {self.description}")
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("steps", total=self.steps, info="starting workers")
            while thread.is_alive() and not self.stop.requested:
                thread.join(_POLL_S)
                self.refresh()
                for line in self.new_starts():
                    console.print(line)
                bar.update(task, total=self.steps, completed=self.step, info=step_info(self.state))

    def wind_down(self, thread: threading.Thread, failed: Callable[[], bool]) -> bool:
        """After a stop request (the board told): wait up to the grace period (a second signal cuts it
        short) for the workers to checkpoint and return. False when the run simply ended meanwhile
        (nothing to stop); True when the caller stops: `stopped_line()` says where."""
        deadline = time.monotonic() + grace_s()
        while thread.is_alive() and not self.stop.urgent and time.monotonic() < deadline:
            thread.join(_POLL_S)
        self.refresh()
        return thread.is_alive() or failed() or "stop" in self.state

    def stopped_line(self) -> str:
        checkpointed = self.state.get("stop")
        if checkpointed:
            return (
                f"stopped: training checkpointed at step {checkpointed.get('step')} of {self.steps}; "
                "rerun the same command to resume"
            )
        return (
            f"stopped: training at step {self.step} of {self.steps}; rerun the same command to resume "
            "from the run's newest checkpoint"
        )


def stop_requested(board, rank: int, world: int, device) -> bool:
    """On every rank at a logged step (all ranks reach it together): whether the driver asked for a
    graceful stop. Rank 0 asks the board; the answer is all-reduced, so every rank stops at the same step
    and DDP's collectives stay paired."""
    import torch
    import torch.distributed as dist

    asked = 0.0
    if rank == 0 and board is not None:
        import ray

        try:
            asked = float(ray.get(board.stop_requested.remote(), timeout=10))
        except Exception:  # a board that does not answer: go on training, the driver's grace bounds it
            asked = 0.0
    if world > 1 and dist.is_initialized():
        flag = torch.tensor([asked], dtype=torch.float64, device=device)
        dist.all_reduce(flag)
        asked = float(flag.item())
    return asked > 0
