"""benchmarks/bench_train_gpu.py in its CPU mode (--tiny): the GPU benchmark's code path runs end to
end (data made without Ray, both phases, FLOPs counted, in-memory and streaming steps, the JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_mode_runs_both_phases_and_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_train_gpu.py"),
        "--tiny",
        "--data",
        str(tmp_path / "data"),
        "--make-data",
        "24",
        "--loader-processes",
        "1",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["device"] == "CPU"
    rows = report["rows"]
    assert [r["phase"] for r in rows] == [1, 2]
    for row in rows:
        assert row["steps"] == 2 and row["batch_images"] == 8
        assert row["in_memory_images_per_s"] > 0 and row["streaming_images_per_s"] > 0
        assert row["gflop_per_image"] > 0 and row["loader_cores_per_gpu"] >= 0
