"""`dppp generate` where the environment is hostile: an output folder that holds a user's files, an S3
endpoint that stays down longer than the retry budget, actors killed with a shard half-written in the
system temp folder. Each: one line, a non-zero exit, nothing of the user's lost, a rerun resumes."""

from __future__ import annotations

from pathlib import Path

from dppp.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_a_non_empty_folder_that_is_no_dataset_is_refused(tmp_path, capsys):
    out = tmp_path / "photos"
    (out / "2024").mkdir(parents=True)
    (out / "2024" / "holiday.jpg").write_bytes(b"a user's picture")
    argv = ["generate", str(ROOT / "configs/demo.yaml"), "--out", str(out), "--identities", "2"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: generate.out: {out.as_uri()} is not empty and holds no dataset (no dataset.json; it has "
        "'2024/holiday.jpg'): refusing to write a dataset among other files; choose an empty or new folder\n"
    )
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["2024", "2024/holiday.jpg"]
    assert (out / "2024" / "holiday.jpg").read_bytes() == b"a user's picture"
    assert main([*argv, "--overwrite"]) == 2  # --overwrite replaces a dataset, never a user's files
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["2024", "2024/holiday.jpg"]
