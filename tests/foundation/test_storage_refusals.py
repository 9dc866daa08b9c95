"""What the disk or the bucket refuses, and a dataset out of step with itself, through the CLI: one line
naming the path and the problem, exit 2 for what the user can fix (a path, a permission, a bucket, a full
disk), exit 1 for a damaged dataset, nothing half-written, never a traceback.

Tests run as root, whom a folder's permissions do not stop: a read-only folder or a full disk is the
`refuse_writes` fixture (tests/conftest.py), which fails this process's writes under a folder as the kernel
does. A path under a file, a missing bucket and damaged datasets are real.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from dppp.cli import main
from dppp.dataset.format import record_name, shard_name
from dppp.dataset.records import ShardRecord, read_index
from dppp.dataset.shard_writer import ShardInfo
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.publish import publish_shard
from tests.pipeline.test_inspect import build_dataset

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def generate(capsys, out) -> tuple[int, str, str]:
    config = str(ROOT / "configs" / "demo.yaml")
    return run(capsys, "generate", config, "--out", str(out), "--identities", "2", "--ids-per-shard", "1")


@pytest.fixture
def dataset(tmp_path, make_samples):
    return build_dataset(open_storage(str(tmp_path / "ds")), tmp_path, make_samples)


# ------------------------------------------------------------------------------------------ generate


def test_generate_into_a_read_only_folder_is_one_line(refuse_writes, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    refuse_writes(out)
    assert generate(capsys, out) == (2, "", f"error: cannot write {out}/dataset.json: permission denied\n")
    assert list(out.iterdir()) == []


def test_generate_under_a_file_names_the_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a folder")
    out = tmp_path / "notes.txt" / "out"
    assert generate(capsys, out) == (
        2,
        "",
        f"error: cannot write {out}/dataset.json: {tmp_path}/notes.txt is a file, not a folder\n",
    )
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


def test_generate_on_a_full_disk_names_the_file_and_leaves_nothing(monkeypatch, tmp_path, capsys):
    out = tmp_path / "out"

    def full(fd):  # the disk fills while dataset.json is written: the kernel reports it at the flush
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert generate(capsys, out) == (
        2,
        "",
        f"error: cannot write {out}/dataset.json: no space left on device\n",
    )
    assert list(out.iterdir()) == []  # the temporary file is gone too


# -------------------------------------------------------------------------------------------- shards


@pytest.mark.parametrize(
    "code, problem", [(errno.EACCES, "permission denied"), (errno.ENOSPC, "no space left on device")]
)
def test_index_on_a_read_only_or_full_dataset_is_one_line_and_keeps_the_old_index(
    dataset, refuse_writes, capsys, code, problem
):
    root = dataset.local_root
    before = read_index(dataset)
    refuse_writes(root, code)
    assert run(capsys, "shards", "index", str(root)) == (
        2,
        "",
        f"error: cannot write {root}/index.parquet: {problem}\n",
    )
    assert read_index(dataset).equals(before)
    nothing_new = ["README.md", "dataset.json", "index.parquet", "shards", "wids-index.json"]
    assert sorted(p.name for p in root.iterdir()) == nothing_new  # no temporary file left beside them


def test_grid_show_and_plot_into_a_read_only_folder_are_one_line(dataset, refuse_writes, tmp_path, capsys):
    folder = tmp_path / "sheets"
    folder.mkdir()
    refuse_writes(folder)
    url = str(dataset.local_root)
    code, _, err = run(capsys, "shards", "grid", url, "--out", str(folder / "grid.png"))
    assert (code, err) == (2, f"error: cannot write {folder}/grid.png: permission denied\n")
    code, _, err = run(capsys, "shards", "show", url, "p000000_v000", "--out", str(folder / "one.jpg"))
    assert (code, err) == (2, f"error: cannot write {folder}/one.jpg: permission denied\n")
    code, _, err = run(capsys, "shards", "stats", url, "--plot", str(folder / "stats.png"))
    assert (code, err) == (2, f"error: cannot write {folder}/stats.png: permission denied\n")
    assert list(folder.iterdir()) == []


def test_grid_into_a_file_of_no_image_format_is_one_line(dataset, tmp_path, capsys):
    code, _, err = run(
        capsys, "shards", "grid", str(dataset.local_root), "--out", str(tmp_path / "sheet.txt")
    )
    assert (code, err) == (
        2,
        f"error: --out: {tmp_path}/sheet.txt: no image format has the extension '.txt'; use .png or .jpg\n",
    )


def _link_member_shard(tmp_path, make_samples, link_type: bytes) -> tuple[Path, ShardInfo, str]:
    """A shard of two samples whose second one's image is a link (to the first one's image)."""
    first, second = make_samples(2, 1, first_pid=40)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for sample in (first, second):
            for name, data in sample.members():
                info = tarfile.TarInfo(name)
                if sample is second and name.endswith(".jpg"):
                    info.type, info.linkname = link_type, f"{first.key}.jpg"
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "links.tar"
    path.write_bytes(buffer.getvalue())
    data = path.read_bytes()
    keys = (first.key, second.key)
    return path, ShardInfo(2, (40, 41), keys, len(data), hashlib.sha256(data).hexdigest(), "jpg"), second.key


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_show_a_sample_whose_image_is_a_link_is_one_line_exit_1(
    dataset, tmp_path, make_samples, capsys, link
):
    link_type = tarfile.SYMTYPE if link == "symlink" else tarfile.LNKTYPE
    path, info, key = _link_member_shard(tmp_path, make_samples, link_type)
    # committed by hand, without an index fragment: publish_shard indexes the tar and refuses the link
    dataset.put_file(path, shard_name(9))
    dataset.put_bytes(ShardRecord.from_info(9, info, {}).to_json(), record_name(9))
    url = str(dataset.local_root)
    assert run(capsys, "shards", "show", url, key) == (
        1,
        "",
        f"error: {dataset.url}/shards/shard-000009.tar: sample '{key}' has no readable image member; "
        f"{key}.jpg: not a regular file (`dppp shards verify` reports it)\n",
    )


def test_stats_on_a_garbage_index_is_one_line_exit_1(dataset, capsys):
    dataset.put_bytes(b"PAR1 this is not parquet", "index.parquet")
    url = str(dataset.local_root)
    assert run(capsys, "shards", "stats", url) == (
        1,
        "",
        f"error: {dataset.url}/index.parquet is not a readable Parquet file (ArrowInvalid): rebuild it with "
        f"`dppp shards index {dataset.url}`\n",
    )


def test_stats_on_a_stale_index_says_so_and_how_to_rebuild(dataset, tmp_path, make_samples, capsys):
    samples = make_samples(2, 3, first_pid=60)  # a shard committed after the index was written
    from dppp.dataset.shard_writer import write_shard

    publish_shard(dataset, 3, tmp_path / "late.tar", write_shard(samples, tmp_path / "late.tar"))
    url = str(dataset.local_root)
    stale = (
        f"error: {dataset.url}/index.parquet is stale: it indexes 3 shard(s) (18 samples), the dataset has 4 "
        f"committed; rebuild it with `dppp shards index {dataset.url}`\n"
    )
    assert run(capsys, "shards", "stats", url) == (1, "", stale)
    dataset.delete(record_name(3))
    dataset.delete(record_name(0))  # a shard the index holds is no longer committed: stale too
    assert run(capsys, "shards", "stats", url)[2] == stale.replace("has 4", "has 2")
    assert run(capsys, "shards", "index", url)[0] == 0
    code, out, _ = run(capsys, "shards", "stats", url)
    assert code == 0 and "12 samples" in out


# --------------------------------------------------------------------------------------------- train


def _train_argv(tmp_path, data: str, out: str) -> list[str]:
    config = tmp_path / "exp.yaml"
    config.write_text(
        "train:\n  run_name: r\n  model: {style_attributes: [scene, camid]}\n"
        "  data: {ids_per_batch: 4, images_per_id: 2, num_workers: 0, pool_identities: 4}\n"
    )
    return ["train", str(config), "--data", data, "--out", out]


def test_train_into_a_missing_bucket_fails_before_ray_starts(moto_s3, tmp_path, capsys):
    import ray

    from tests.trainer.test_data import write_dataset

    data = write_dataset(str(tmp_path / "ds"), n_ids=24, ids_per_shard=3)
    code, out, err = run(capsys, *_train_argv(tmp_path, data, "s3://missing-bucket/runs"))
    assert (code, out) == (2, "")
    assert err == (
        "error: cannot write to s3://missing-bucket/runs/r: bucket 'missing-bucket' does not exist at "
        f"{moto_s3.endpoint_url}\n"
    )
    assert not ray.is_initialized()


def test_train_into_a_read_only_folder_fails_before_ray_starts(refuse_writes, tmp_path, capsys):
    import ray

    from tests.trainer.test_data import write_dataset

    data = write_dataset(str(tmp_path / "ds"), n_ids=24, ids_per_shard=3)
    runs = tmp_path / "runs"
    runs.mkdir()
    refuse_writes(runs)
    code, out, err = run(capsys, *_train_argv(tmp_path, data, str(runs)))
    assert (code, out, err) == (2, "", f"error: cannot write to {runs}/r: permission denied\n")
    assert not ray.is_initialized() and list(runs.iterdir()) == []
