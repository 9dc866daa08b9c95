"""`dppp train` on damaged data: member size limits honoured by the streaming loader, damage the listing
shows refused before Ray starts, damage inside a tar stopping a run at once with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dppp.dataset.limits import MemberLimits, ShardStorageConfig
from dppp.dataset.shard_reader import OversizedMemberError
from dppp.foundation.errors import DamagedDataError
from tests.trainer.test_data import write_dataset
from tests.trainer.test_train import ray_cluster, tiny_config  # noqa: F401 (the module's Ray fixture)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("damaged") / "ds"), n_ids=6, ids_per_shard=3)


def test_the_loader_reads_with_the_member_limits_of_its_storage_config(small_dataset):
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.unit_reader import UnitReader

    tight = ShardStorageConfig(member_limits=MemberLimits(json_max=100))  # every json here is ~300 bytes
    data = open_training_data([small_dataset], tight)
    unit = data.units[0]
    with pytest.raises(OversizedMemberError, match=rf"^{unit.name}: member 'p000000_v000.json' is \d+ B "):
        UnitReader(data, style_attributes=["camid"]).read(unit)  # style labels: the json is read
    assert len(UnitReader(data).read(unit)) == 3  # images only: the json is stepped over, never read


def _copy(url: str, tmp_path) -> str:
    import shutil

    target = tmp_path / "ds"
    shutil.copytree(url, target)
    return str(target)


def _tar(url: str, index: int = 1):
    from dppp.dataset.format import shard_name

    return Path(url) / shard_name(index)


def _corrupt_a_header(path: Path) -> tuple[str, int]:
    """Spoil the 4th member's header in place (same size: the listing cannot tell); returns the name of
    the member before it, where the reader stops, and the header's offset."""
    import tarfile

    with tarfile.open(path) as tar:
        members = tar.getmembers()
    data = bytearray(path.read_bytes())
    data[members[3].offset : members[3].offset + 8] = b"garbage!"
    path.write_bytes(bytes(data))
    return members[2].name, members[3].offset


def test_a_tar_the_listing_shows_damaged_is_refused_before_ray_starts(small_dataset, tmp_path, capsys):
    from dppp.cli import main
    from dppp.trainer.data.sources import open_training_data

    url = _copy(small_dataset, tmp_path)
    tar = _tar(url)
    whole = tar.stat().st_size
    tar.write_bytes(tar.read_bytes()[: whole // 2])
    expected = (
        f"file://{url}: 1 committed shard(s) damaged: shards/shard-000001.tar is {whole // 2} bytes, its "
        f"record says {whole} (`dppp shards verify file://{url}` checks every shard)"
    )
    with pytest.raises(DamagedDataError) as info:
        open_training_data([url])
    assert str(info.value) == expected
    tar.unlink()
    missing = expected.replace(
        f"is {whole // 2} bytes, its record says {whole}", f"is missing (its record says {whole} bytes)"
    )
    config = tmp_path / "exp.yaml"
    config.write_text("train: {}\n")
    code = main(["train", str(config), "--data", url, "--out", str(tmp_path / "runs")])
    assert (code, capsys.readouterr().err) == (1, f"error: {missing}\n")
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_damage_inside_a_tar_reads_as_one_line_from_a_loader_process(small_dataset, tmp_path):
    """A header spoilt in place (the listing cannot tell): the DataLoader process's error, re-made by torch
    with its traceback, is given back as the reader's own line naming the shard and the member."""
    from dppp.trainer.data.loader import make_loader
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream
    from dppp.trainer.training.run_failures import one_line
    from tests.trainer.test_data import config

    url = _copy(small_dataset, tmp_path)
    after, offset = _corrupt_a_header(_tar(url, 0))
    data = open_training_data([url])
    cfg = config(num_workers=1)
    with pytest.raises(DamagedDataError) as info:
        list(make_loader(PKBatchStream(data, cfg, (64, 32), seed=0, epoch=0), cfg))
    assert str(info.value).startswith("Caught DamagedDataError in DataLoader worker process 0.\nOriginal")
    clean = one_line(info.value)
    assert type(clean) is DamagedDataError and clean.exit_code == 1
    assert str(clean) == (
        f"{data.units[0].name}: truncated or corrupted tar after member {after!r} (invalid header at "
        f"byte {offset}: bad checksum)"
    )


def test_a_worker_s_user_error_ends_the_run_but_a_lost_worker_or_an_outage_does_not():
    """Ray Train's controller calls StopOnUserError.after_exception with each failed worker's exception."""
    import torch._utils

    from dppp.foundation.errors import DataError
    from dppp.foundation.storage.base import StorageUnavailable
    from dppp.trainer.training.run_failures import StopOnUserError

    try:
        raise DamagedDataError("s3://b/ds/shards/shard-000001.tar: truncated or corrupted tar")
    except DamagedDataError:
        wrapped = torch._utils.ExceptionWrapper(where="in DataLoader worker process 0")
    try:
        wrapped.reraise()
    except DamagedDataError as exc:
        from_loader = exc
    stop = StopOnUserError()
    with pytest.raises(DamagedDataError) as info:
        stop.after_exception(None, {0: RuntimeError("a collective aborted"), 1: from_loader})
    assert str(info.value) == "s3://b/ds/shards/shard-000001.tar: truncated or corrupted tar"
    with pytest.raises(DataError, match="^no such attribute$"):
        stop.after_exception(None, {0: DataError("no such attribute")})
    stop.after_exception(None, {0: RuntimeError("worker died"), 1: StorageUnavailable("endpoint down")})


# ---- slow: real Ray Train runs --------------------------------------------------------------------


def _write_train_config(tmp_path, config) -> str:
    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"train": config.model_dump(mode="json")}))
    return str(path)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_train_on_a_tar_damaged_inside_stops_at_once_in_one_line(tmp_path, capsys):
    """One DataLoader process per worker, max_failures 3: the first start fails on the spoilt header, and
    the run ends there (no worker-group restart) with the reader's line, exit 1."""
    from dppp.cli import main

    url = write_dataset(str(tmp_path / "ds"), n_ids=12, ids_per_shard=3)
    after, offset = _corrupt_a_header(_tar(url, 2))
    config = tiny_config(data={"num_workers": 1}, max_failures=3, run_name="damaged")
    code = main(
        ["train", _write_train_config(tmp_path, config), "--data", url, "--out", str(tmp_path / "runs")]
    )
    err = capsys.readouterr().err
    expected = (
        f"error: file://{url}/shards/shard-000002.tar: truncated or corrupted tar after member {after!r} "
        f"(invalid header at byte {offset}: bad checksum)"
    )
    assert code == 1 and err.rstrip("\n").splitlines()[-1] == expected, err
    # The module's Ray (the fixture's) forwards what its workers print, as `(RayTrainWorker pid=...) ...`
    # lines; the Ray that `dppp train` starts itself does not (foundation/ray_cluster.py). dppp's own:
    own = [line for line in err.splitlines() if " pid=" not in line]
    assert not [line for line in own if "Traceback" in line or "Caught" in line or "restarted" in line], own


def _newest_checkpoint(run: Path) -> Path:
    import json

    from dppp.trainer.training.resume import SNAPSHOT

    snapshot = json.loads((run / SNAPSHOT).read_text())
    return run / snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_resume_falls_back_past_a_damaged_or_removed_newest_checkpoint(tmp_path, capsys):
    """Each rerun of the finished run would do nothing from its newest checkpoint (the last epoch's end);
    falling back to the one before (phase 2's start), it trains phase 2's epoch again."""
    import shutil

    from dppp.trainer.methods.checkpoint import read_state
    from dppp.trainer.training.train import run_train

    url = write_dataset(str(tmp_path / "ds"), n_ids=12, ids_per_shard=3)
    out, run = tmp_path / "runs", tmp_path / "runs" / "t"
    config = tiny_config(phase2={"epochs": 1})

    def train():
        return run_train(config, [url], str(out), workers=1, progress=False)

    first = train()
    newest = _newest_checkpoint(run)
    [older] = [p for p in run.glob("checkpoint_*") if p.is_dir() and p != newest]  # checkpoint_keep: 2
    assert read_state(newest).step == first.steps and read_state(older).step < first.steps
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    # as if stopped after its last checkpoint, before final/: a finished run's rerun trains nothing
    shutil.rmtree(run / "final")
    capsys.readouterr()
    second = train()
    err = capsys.readouterr().err
    assert err.splitlines()[:2] == [
        f"skipped checkpoint file://{newest}: model.safetensors does not match the sha256 recorded in "
        "checkpoint.json (truncated or corrupted)",
        f"resuming from checkpoint file://{older} (step {read_state(older).step})",
    ], err
    assert second.starts[0]["resumed"] and second.starts[0]["step"] == read_state(older).step
    assert read_state(run / "final").step == second.steps

    gone = _newest_checkpoint(run)
    shutil.rmtree(gone)  # the obvious fix a user tries: the newest checkpoint folder removed by hand
    shutil.rmtree(run / "final")
    third = train()
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"skipped checkpoint file://{gone}: its folder is gone", err
    assert third.starts[0]["resumed"] and third.starts[0]["step"] < third.steps
    assert read_state(run / "final").step == third.steps
