"""Preemption and progress of `dppp generate`: a real `python -m dppp generate` subprocess with its own
local Ray instance gets SIGTERM / SIGINT (sent to its pid only) once a shard has committed; it stops with
one line and exit 143 / 130, leaves no temporary file and no process behind, and a rerun finishes
byte-identical to a clean run. The plain progress lines of a run logged to a file (stdout captured)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dppp.dataset.records import read_index
from dppp.foundation.errors import Interrupted
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.generate import run_generate
from tests.pipeline.test_generate import ROOT, gen_config, tar_digests

ARGS = {"identities": 24, "ids_per_shard": 2, "workers": 1}
STOPPED = re.compile(r"^stopped: (\d+) shards committed, (\d+) left; rerun to resume$")


def session_processes(session: int) -> list[str]:
    """Processes still in the session the driver led (it and everything it started: Ray's own too)."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, session
        if int(fields[3]) == session and fields[0] != "Z":
            left.append(f"{entry.name} {stat[: stat.rindex(')') + 1]}")
    return left


def generate_then_signal(out: Path, signum: int, env: dict[str, str]) -> tuple[int, str]:
    """Start `python -m dppp generate` in a session of its own, signal its pid once a shard is committed;
    returns its exit code and stderr once it and every process it started are gone."""
    command = [sys.executable, "-m", "dppp", "generate", str(ROOT / "configs/demo.yaml"), "--out", str(out)]
    command += [f"--{name.replace('_', '-')}={value}" for name, value in ARGS.items()]
    driver = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None:
            if list((out / "shards").glob("*.json")):
                break
            time.sleep(0.05)
        assert driver.poll() is None, "the run ended before a shard was committed"
        driver.send_signal(signum)
        _, err = driver.communicate(timeout=60)  # the bound: stopped within 60 s
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    deadline = time.monotonic() + 30  # Ray's processes go with their driver, a moment later
    while (left := session_processes(driver.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}"
    return driver.returncode, err


@pytest.fixture(scope="module")
def clean(tmp_path_factory, ray_instance):
    out = tmp_path_factory.mktemp("clean") / "dataset"
    run_generate(gen_config(out, **ARGS), progress=False)
    return out


@pytest.mark.slow
def test_sigterm_stops_generate_with_one_line_and_a_rerun_finishes_byte_identical(clean, tmp_path):
    out = tmp_path / "dataset"
    returncode, err = generate_then_signal(out, signal.SIGTERM, {})
    assert returncode == 143, err
    assert "SIGTERM received" not in err and "PC: @" not in err and "Traceback" not in err, err
    stopped = [line for line in err.splitlines() if line.startswith("stopped")]
    assert len(stopped) == 1 and STOPPED.match(stopped[0]), err
    committed, left = map(int, STOPPED.match(stopped[0]).groups())
    assert committed == len(list((out / "shards").glob("*.json"))) and committed + left == 12
    assert left > 0, "the signal landed after the last shard"
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]

    summary = run_generate(gen_config(out, **ARGS), progress=False)
    assert summary.shards_skipped == committed and summary.shards_done == left
    assert tar_digests(str(out)) == tar_digests(str(clean))
    for derived in ("index.parquet", "README.md", "wids-index.json"):
        assert (out / derived).read_bytes() == (clean / derived).read_bytes(), derived


@pytest.mark.slow
def test_sigint_with_no_grace_abandons_shards_in_flight_cleanly(clean, tmp_path, monkeypatch):
    """In this process (its Ray instance is the module's): SIGINT to our own pid once a shard is committed,
    no grace period, so the shards in flight are abandoned and their actors killed, mid-write or not."""
    monkeypatch.setenv("DPPP_STOP_GRACE_S", "0")
    out = tmp_path / "dataset"

    def interrupt_after_first_commit():
        deadline = time.monotonic() + 120
        while not list((out / "shards").glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_after_first_commit, daemon=True)
    watcher.start()
    with pytest.raises(Interrupted) as stopped:
        run_generate(gen_config(out, **ARGS), progress=False)
    watcher.join()
    assert stopped.value.exit_code == 130
    committed, left = map(int, STOPPED.match(str(stopped.value)).groups())
    assert committed == len(list((out / "shards").glob("*.json"))) and committed + left == 12 and left
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    run_generate(gen_config(out, **ARGS), progress=False)
    assert tar_digests(str(out)) == tar_digests(str(clean))


@pytest.mark.slow
def test_logged_run_prints_progress_lines_and_says_it_resumed(clean, tmp_path, capsys):
    """stdout is captured here, not a terminal: plain lines, at an interval short enough that every poll
    prints one (the interval itself is checked in tests/foundation/test_progress_lines.py)."""
    out = tmp_path / "dataset"
    shutil.copytree(clean, out)
    for index in (9, 10, 11):
        for suffix in ("json", "tar", "parquet"):
            (out / "shards" / f"shard-{index:06d}.{suffix}").unlink()
    capsys.readouterr()
    summary = run_generate(gen_config(out, **ARGS), progress=True, progress_every=1e-6)
    printed = capsys.readouterr().out.splitlines()
    assert summary.shards_done == 3
    assert "resumed: 9 shards already committed" in printed
    lines = [line for line in printed if line.startswith("generate: ")]
    assert lines and all(re.search(r"^generate: \d+/12 shards \(\d+%\), \d+/\d+ images", x) for x in lines)
    assert any(re.search(r"1[0-2]/12 shards .*ETA \d+", x) for x in lines), lines
    assert tar_digests(str(out)) == tar_digests(str(clean))


@pytest.mark.slow
def test_hugging_face_reads_a_generated_dataset(clean, tmp_path, monkeypatch):
    """The real generator's metadata (nested, with nulls) through the dataset card: one row per image."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    rows = datasets.load_dataset(str(clean), split="train", cache_dir=str(tmp_path / "hf-cache"))
    index = read_index(open_storage(str(clean)))
    assert rows.num_rows == index.num_rows and sorted(rows["__key__"]) == sorted(
        index.column("key").to_pylist()
    )
    first = rows[0]
    assert first["jpg"].size == (128, 256) and first["cls"] == first["json"]["pid"]
    assert first["json"]["attributes"]["gender"] and first["txt"] == first["json"]["prompt"]
