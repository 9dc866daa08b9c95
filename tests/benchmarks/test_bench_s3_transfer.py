"""benchmarks/bench_s3_transfer.py at a tiny size: BEFORE (loaded from git) and AFTER both move the file."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark


@pytest.fixture
def isolated_aws_env(monkeypatch):
    # the benchmark sets fake credentials in os.environ for its loopback server: set here first, so that
    # the test's undo puts back what was there before (delenv of an unset name would record nothing)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.setenv(name, "unset-by-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


def test_bench_s3_transfer_runs_before_and_after_in_one_run(isolated_aws_env, repo_root, capsys):
    if not (repo_root / ".git").exists():
        pytest.skip("BEFORE is read from git history: not a git checkout")
    bench = load_benchmark("bench_s3_transfer")
    rows = bench.main(["--sizes", "1", "6", "--threshold-mb", "5", "--chunk-mb", "5", "--repeats", "1"])
    assert [(row["size_mb"], row["parts"]) for row in rows] == [(1, 1), (6, 2)]
    for row in rows:
        assert all(row[f"{way}_{side}"] > 0 for way in ("up", "down") for side in ("before", "after"))
    out = capsys.readouterr().out
    assert "| 6 MB | 2 |" in out and out.count("x |") == 4  # a ratio for upload and download of each file
