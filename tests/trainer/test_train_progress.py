"""What `dppp train` shows while Ray Train runs (trainer/training/progress.py), with a scripted progress board:
plain lines in a log, a failed poll keeping the last state (the bar once sat at "0/616 starting
workers" while training was at step 524), and a stop request ending the watch with its one line."""

from __future__ import annotations

import signal
import threading

from dppp.foundation.graceful_stop import StopRequest
from dppp.trainer.training.progress import TrainWatch, step_info

STEP = {"kind": "step", "phase": 2, "epoch": 3, "loss": 1.5, "images_per_s": 120.0, "step": 524}


def board(*states):
    """A poll that answers `states` in turn (None: a failed or timed-out poll), then the last again."""
    answers = list(states)

    def poll():
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return poll


def test_lines_show_steps_once_workers_train_and_survive_a_failed_poll():
    printed: list[str] = []
    done = threading.Event()
    start = {"kind": "start", "step": 0, "resumed": False, "world": 1, "total_steps": 616}
    started = {"starts": [start], "step_now": 0}
    training = {"starts": started["starts"], "step": STEP, "step_now": 524}
    polls = board({"starts": []}, {"starts": []}, started, training, None, None, {})  # the 1st: the start
    fit = threading.Thread(target=done.wait, args=(30,))
    fit.start()

    def poll():
        state = polls()
        if len(printed) >= 8:
            done.set()
        return state

    watch = TrainWatch(
        poll,
        616,
        "8 units",
        progress=True,
        stop=StopRequest(),
        every_s=1e-9,
        plain=True,
        write=printed.append,
    )
    watch.watch(fit)
    fit.join()
    assert printed[0] == "training on 8 units"
    lines = printed[1:]
    assert lines[0].startswith("train: 0/616 steps (0%), starting workers")
    assert lines[1] == "started a new run with 1 worker(s); the run ends at step 616"  # as the bar says it
    assert lines[2].startswith("train: 0/616 steps (0%), training")
    assert lines[3].startswith("train: 524/616 steps (85%), phase 2 epoch 3 loss 1.5000 120 img/s")
    assert all(line.startswith("train: 524/616 steps") for line in lines[4:])  # failed polls: kept


def test_a_stop_request_ends_the_watch_with_the_step_reached():
    stop = StopRequest()
    fit = threading.Thread(target=threading.Event().wait, args=(30,), daemon=True)
    fit.start()

    def poll():
        stop.request(signal.SIGTERM)
        return {"starts": [], "step": STEP, "step_now": 524}

    watch = TrainWatch(poll, 616, "data", progress=True, stop=stop, plain=True, write=lambda line: None)
    watch.watch(fit)
    assert fit.is_alive() and stop.exit_code == 143
    assert watch.stopped_line().startswith("stopped: training at step 524 of 616; rerun")
    assert step_info({"starts": [{"step": 40, "resumed": True}]}) == "training from step 40"
