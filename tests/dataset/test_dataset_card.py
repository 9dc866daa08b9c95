"""The dataset card (README.md) and wids shard index the index merge writes: Hugging Face `load_dataset`
on the folder gives one row per image (decoded image, pid, metadata), not the parquet files' rows; the
wids index lists every committed tar with its samples; `shards verify` takes both as part of the dataset
and notices a stale wids index."""

from __future__ import annotations

import json

import pytest

from dppp.cli import main
from dppp.dataset.card import CARD_NAME, WIDS_INDEX_NAME, WIDS_KIND, card_text
from dppp.dataset.index import rebuild_index
from dppp.dataset.listing import committed_shards
from dppp.foundation.storage.urls import open_storage
from tests.trainer.test_data import write_dataset


@pytest.fixture
def dataset(tmp_path):
    url = write_dataset(str(tmp_path / "ds"), n_ids=6, ids_per_shard=2)
    rebuild_index(url)
    return tmp_path / "ds"


def test_wids_index_lists_each_committed_tar_and_its_samples(dataset):
    records = committed_shards(open_storage(str(dataset)))
    index = json.loads((dataset / WIDS_INDEX_NAME).read_text())
    assert index["__kind__"] == WIDS_KIND and index["wids_version"] == 1
    assert index["shardlist"] == [{"url": r.tar, "nsamples": r.count} for r in records]
    assert all((dataset / entry["url"]).is_file() for entry in index["shardlist"])


def test_card_is_rewritten_byte_identical_and_verify_accepts_it(dataset, capsys):
    card, wids = (dataset / CARD_NAME).read_bytes(), (dataset / WIDS_INDEX_NAME).read_bytes()
    assert card.startswith(b"---\nconfigs:\n") and b"path: shards/shard-*.tar" in card
    assert str(dataset).encode() not in card + wids  # nothing of where it lives (nor its storage settings)
    rebuild_index(str(dataset))
    assert (dataset / CARD_NAME).read_bytes() == card and (dataset / WIDS_INDEX_NAME).read_bytes() == wids
    assert main(["shards", "verify", str(dataset)]) == 0
    assert "stray" not in capsys.readouterr().out

    (dataset / WIDS_INDEX_NAME).write_text(json.dumps({"__kind__": WIDS_KIND, "shardlist": []}))
    assert main(["shards", "verify", str(dataset)]) == 0  # derived data: a note, as for the index
    assert f"{WIDS_INDEX_NAME} is stale" in capsys.readouterr().out


def test_hugging_face_load_dataset_gives_one_row_per_image(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    records = committed_shards(open_storage(str(dataset)))
    rows = datasets.load_dataset(str(dataset), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert rows.num_rows == sum(r.count for r in records)  # not index.parquet's rows, nor the fragments'
    assert sorted(rows["__key__"]) == sorted(k for r in records for k in r.keys)
    first = rows[0]
    assert first["jpg"].size == (32, 64)  # a decoded PIL image
    assert first["cls"] == first["json"]["pid"] == int(first["__key__"][1:7])


def test_the_card_names_a_renderer_look_other_than_the_default():
    photo = card_text({"config": {"renderer": {"kind": "procedural", "look": "photo"}}}, 1, 1)
    assert "renderer: `procedural, look photo`" in photo
    default = card_text({"config": {"renderer": {"kind": "procedural"}}}, 1, 1)
    assert "renderer: `procedural`" in default and "look" not in default
