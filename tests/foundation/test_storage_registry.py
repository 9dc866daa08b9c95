"""A storage backend is one module plus one registry entry: a toy backend from tests/ (toy://NAME) carries a
real dataset through the dataset code and `dppp shards`, and open_storage names no backend."""

from __future__ import annotations

import pytest

from dppp.cli import main
from dppp.dataset.format import shard_name
from dppp.dataset.index import write_index
from dppp.dataset.records import read_index, write_dataset_manifest
from dppp.dataset.shard_writer import write_shard
from dppp.foundation.errors import UserError
from dppp.foundation.storage.urls import SCHEMES, Scheme, open_storage, register_scheme
from dppp.pipeline.publish import publish_shard
from tests.helpers import toy_storage

IDS_PER_SHARD, VIEWS, SHARDS = 2, 3, 2


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(SCHEMES, "toy", toy_storage.SCHEME)
    monkeypatch.setitem(toy_storage.ROOTS, "demo", tmp_path / "store")
    return tmp_path / "store"


def test_a_registered_backend_carries_a_dataset_through_the_dataset_code_and_the_cli(
    toy, tmp_path, make_samples, capsys
):
    storage = open_storage("toy://demo")
    assert isinstance(storage, toy_storage.ToyStorage)
    write_dataset_manifest(
        storage,
        {
            "config": {"seed": 0, "identities": IDS_PER_SHARD * SHARDS},
            "plan": {"identities": IDS_PER_SHARD * SHARDS, "ids_per_shard": IDS_PER_SHARD, "shards": SHARDS},
        },
    )
    for index in range(SHARDS):
        samples = make_samples(IDS_PER_SHARD, VIEWS, first_pid=index * IDS_PER_SHARD)
        info = write_shard(samples, tmp_path / f"{index}.tar")
        publish_shard(storage, index, tmp_path / f"{index}.tar", info)
    write_index(storage)

    # The objects are where the toy backend put them, and the index reads back through it.
    assert (toy / shard_name(SHARDS - 1)).is_file()
    assert read_index(open_storage("toy://demo")).num_rows == SHARDS * IDS_PER_SHARD * VIEWS

    assert main(["shards", "ls", "toy://demo"]) == 0
    out = capsys.readouterr().out
    assert all(shard_name(i) in out for i in range(SHARDS)) and f"{SHARDS}/{SHARDS}" in out
    assert main(["shards", "verify", "toy://demo"]) == 0
    capsys.readouterr()


def test_the_backend_s_own_errors_and_the_unknown_scheme_message(toy, capsys):
    with pytest.raises(UserError, match="no toy store named 'other'"):
        open_storage("toy://other")
    # The list of schemes a user may write comes from the registry (aliases such as s3a unlisted).
    with pytest.raises(UserError, match=r"use a local path, file://, s3:// or toy://$"):
        open_storage("ftp://host/data")
    assert main(["shards", "ls", "toy://other"]) == 2
    assert "no toy store named 'other'" in capsys.readouterr().err


def test_without_the_entry_the_scheme_is_unknown():
    assert "toy" not in SCHEMES
    with pytest.raises(UserError, match=r"unsupported storage URL scheme 'toy://'.*file:// or s3://$"):
        open_storage("toy://demo")


def test_a_scheme_name_a_url_cannot_spell_is_refused():
    with pytest.raises(ValueError, match="lower-case letters"):
        register_scheme("Toy_1", Scheme(toy_storage.open_toy_url))
