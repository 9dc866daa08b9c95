"""A graceful stop of `dppp train` (SIGTERM / SIGINT to this process, where run_train runs in the main
thread): the workers checkpoint at their next logged step and return, run_train raises Interrupted with
one line, and a rerun of the same run resumes from that checkpoint and finishes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from dppp.foundation.errors import Interrupted
from tests.trainer.test_train import dataset, ray_cluster, tiny_config  # noqa: F401 (fixtures)


@pytest.mark.slow
def test_sigterm_checkpoints_then_a_rerun_resumes_from_it(ray_cluster, dataset, tmp_path):  # noqa: F811
    from dppp.trainer.training.train import run_train

    out = tmp_path / "runs"
    log = out / "t" / "metrics.jsonl"
    config = tiny_config(phase2={"epochs": 40})  # long enough that the signal lands mid-run

    def sigterm_once_training():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if log.exists() and '"kind": "step"' in log.read_text():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.1)

    threading.Thread(target=sigterm_once_training, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        run_train(config, [dataset], str(out), workers=2, progress=False)
    assert stopped.value.exit_code == 143
    line = str(stopped.value)
    assert line.startswith("stopped: training checkpointed at step ") and line.endswith(
        "rerun the same command to resume"
    )
    step = int(line.split("step ")[1].split(" ")[0])
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert records[-1]["kind"] == "stop" and records[-1]["step"] == step
    assert not (out / "t" / "final").exists()

    # The rerun (fewer epochs, so it ends soon) resumes from the stop's checkpoint, mid-epoch.
    resumed = run_train(tiny_config(phase2={"epochs": 4}), [dataset], str(out), workers=2, progress=False)
    assert resumed.starts[0]["resumed"] and resumed.starts[0]["step"] == step
    assert (out / "t" / "final" / "checkpoint.json").exists()
