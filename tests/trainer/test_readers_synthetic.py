"""Synthetic splits of dppp datasets: deterministic, Market-style, every query left with a true match."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dppp.dataset.format import shard_name
from dppp.dataset.shard_writer import Sample, write_shard
from dppp.foundation.errors import DataError
from dppp.trainer.data.readers import ReidItem, split_synthetic, synthetic_images
from dppp.trainer.data.specs import read_dataset
from dppp.trainer.evaluation.metrics import evaluate_ranking


def index_rows(num_pids=6, views=9, cams=(1, 2, 3), single_cam_pid=None):
    rows = []
    for pid in range(1, num_pids + 1):
        for view in range(views):
            camid = cams[0] if pid == single_cam_pid else cams[view % len(cams)]
            rows.append(
                {
                    "key": f"p{pid:06d}_v{view:03d}",
                    "shard": (pid - 1) // 2,
                    "pid": pid,
                    "camid": camid,
                    "view": view,
                }
            )
    return rows


def perfect_ranking(split):
    """Distances that put every true match first: 0 for the same pid, 1 otherwise."""
    q_pids = np.array([i.pid for i in split.query])
    g_pids = np.array([i.pid for i in split.gallery])
    distmat = (q_pids[:, None] != g_pids[None, :]).astype(float)
    return evaluate_ranking(
        distmat, q_pids, g_pids, [i.camid for i in split.query], [i.camid for i in split.gallery]
    )


def test_one_query_per_camera_and_identity_rest_to_gallery():
    split = split_synthetic(index_rows(), seed=0)
    assert split.train == ()
    assert Counter((i.pid, i.camid) for i in split.query) == {
        (p, c): 1 for p in range(1, 7) for c in (1, 2, 3)
    }
    assert len(split.gallery) == 6 * 9 - 18
    assert not {i.path for i in split.query} & {i.path for i in split.gallery}
    result = perfect_ranking(split)
    assert (result.num_valid, result.num_skipped, result.mAP) == (18, 0, 1.0)


def test_seeded_and_independent_of_row_order_and_container():
    rows = index_rows()
    split = split_synthetic(rows, seed=1)
    assert split == split_synthetic(list(reversed(rows)), seed=1)
    assert split == split_synthetic(pa.Table.from_pylist(rows), seed=1)
    others = {split_synthetic(rows, seed=s).query for s in range(2, 6)}
    assert any(query != split.query for query in others)


def test_each_camera_keeps_a_gallery_sample():
    # Two views per camera, three queries asked per camera: one query and one gallery sample each.
    split = split_synthetic(index_rows(views=6), seed=0, queries_per_camera=3)
    assert Counter((i.pid, i.camid) for i in split.query) == Counter((i.pid, i.camid) for i in split.gallery)
    assert perfect_ranking(split).num_skipped == 0
    # With more views, the requested count is honoured.
    many = split_synthetic(index_rows(views=12), seed=0, queries_per_camera=2)
    assert set(Counter((i.pid, i.camid) for i in many.query).values()) == {2}


def test_single_camera_identity_goes_to_the_gallery():
    split = split_synthetic(index_rows(single_cam_pid=4), seed=0)
    assert 4 not in {i.pid for i in split.query}
    assert sum(i.pid == 4 for i in split.gallery) == 9
    assert perfect_ranking(split).num_skipped == 0


def test_held_out_identities_are_chosen_by_seed_and_the_rest_is_train():
    rows = index_rows(num_pids=10)
    split = split_synthetic(rows, seed=2, held_out_pids=4)
    test_pids = {i.pid for i in split.query + split.gallery}
    train_pids = {i.pid for i in split.train}
    assert len(test_pids) == 4 and not test_pids & train_pids and len(train_pids) == 6
    assert len(split.train) == 6 * 9
    chosen = {
        frozenset(i.pid for i in split_synthetic(rows, seed=s, held_out_pids=4).query) for s in range(6)
    }
    assert len(chosen) > 1
    with pytest.raises(DataError, match="held_out_pids=11 but the index has 10 identities"):
        split_synthetic(rows, seed=0, held_out_pids=11)


def test_bad_indexes_are_reported():
    rows = index_rows()
    with pytest.raises(DataError, match="lacks column"):
        split_synthetic(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "camid"} for r in rows]))
    with pytest.raises(DataError, match="index row 0 lacks pid"):
        split_synthetic([{"key": "a", "shard": "s", "camid": 1}])
    with pytest.raises(DataError, match="twice"):
        split_synthetic(rows + rows[:1])
    with pytest.raises(DataError, match="expected an integer"):
        split_synthetic([{**rows[0], "pid": "7"}])
    with pytest.raises(DataError, match="empty"):
        split_synthetic([])
    with pytest.raises(DataError, match="no test identity is seen by two cameras"):
        split_synthetic(index_rows(cams=(5,)))
    with pytest.raises(ValueError, match="queries_per_camera"):
        split_synthetic(rows, queries_per_camera=0)


def test_synthetic_index_read_from_a_dataset_folder(tmp_path):
    pq.write_table(pa.Table.from_pylist(index_rows()), tmp_path / "index.parquet")
    split = read_dataset(f"synthetic:{tmp_path}", seed=3, queries_per_camera=1)
    assert split == split_synthetic(index_rows(), 3) and len(split.query) == 6 * 3
    # The index stores shard numbers; items name the tar under the dataset root and the sample key.
    assert {item.path.split("#")[0] for item in split.query} == {
        f"shards/shard-00000{i}.tar" for i in range(3)
    }
    assert all(item.path.split("#")[1].startswith(f"p{item.pid:06d}_v") for item in split.query)
    with pytest.raises(DataError, match="no index.parquet at"):
        read_dataset(f"synthetic:{tmp_path / 'empty'}")
    (tmp_path / "index.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="index.parquet is not a readable Parquet file"):
        read_dataset(f"synthetic:{tmp_path}")


def test_synthetic_images_stream_from_real_shards(tmp_path):
    """Items of a split are read back from tar shards written by the pipeline's shard writer."""
    colour = {pid: (40 * pid, 255 - 40 * pid, 90) for pid in range(1, 7)}
    rows = index_rows()
    for shard in sorted({r["shard"] for r in rows}):
        samples = []
        for r in (r for r in rows if r["shard"] == shard):
            buffer = io.BytesIO()
            Image.new("RGB", (4, 8), colour[r["pid"]]).save(buffer, format="PNG")
            samples.append(
                Sample(
                    key=r["key"],
                    image_bytes=buffer.getvalue(),
                    image_ext="png",
                    metadata={"pid": r["pid"], "camid": r["camid"]},
                    prompt="a person",
                    pid=r["pid"],
                )
            )
        write_shard(samples, tmp_path / shard_name(shard))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "index.parquet")
    split = read_dataset(f"synthetic:{tmp_path}", seed=0)

    images = list(synthetic_images(str(tmp_path), split.gallery))
    assert len(images) == len(split.gallery)
    assert [im.getpixel((0, 0)) for im in images] == [colour[item.pid] for item in split.gallery]
    # Any order works (a shard is re-read when items come back to it).
    shuffled = list(reversed(split.query))
    assert [im.getpixel((1, 1)) for im in synthetic_images(str(tmp_path), shuffled)] == [
        colour[item.pid] for item in shuffled
    ]
    with pytest.raises(DataError, match="has no image for sample p000001_v999"):
        list(synthetic_images(str(tmp_path), [ReidItem("shards/shard-000000.tar#p000001_v999", 1, 1)]))
