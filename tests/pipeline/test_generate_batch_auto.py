"""`generate.renderer.batch_size: auto` through `dppp generate`: probed once, recorded, reused on a rerun."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dppp.config import load_experiment
from dppp.dataset.format import record_name
from dppp.dataset.listing import committed_shards
from dppp.dataset.records import read_dataset_manifest
from dppp.dataset.shard_reader import read_shard
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.generate import RESOLVED_BATCH_SIZE, run_generate
from dppp.pipeline.renderers.tiny_diffusion import build_tiny_diffusion

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def auto_config(model: Path, out: Path):
    sets = [
        f"generate.out={out}",
        f"generate.renderer.model={model}",
        "generate.renderer.batch_size=auto",
        "generate.renderer.max_batch_size=2",
        "generate.identities=4",
        "generate.ids_per_shard=2",
        "generate.workers=1",
    ]
    return load_experiment(ROOT / "configs" / "tiny-diffusion.yaml", sets).generate


def test_auto_batch_size_is_probed_once_recorded_and_reused(tmp_path, ray_instance):
    model = build_tiny_diffusion(tmp_path / "tiny")
    config = auto_config(model, tmp_path / "dataset")
    first = run_generate(config, progress=False)
    storage = open_storage(str(tmp_path / "dataset"))
    chosen = read_dataset_manifest(storage)["resolved"][RESOLVED_BATCH_SIZE]
    assert chosen in (1, 2)
    assert any(
        "images/s by batch size" in note and "recorded in dataset.json" in note for note in first.notes
    )
    records = committed_shards(storage)
    for record in records:  # every sample says which batch size rendered it
        for sample in read_shard(storage.open_read(record.tar)):
            assert sample["json"]["renderer"]["batch_size"] == chosen
    digests = {r.tar: hashlib.sha256(storage.read_bytes(r.tar)).hexdigest() for r in records}

    # A rerun that has a shard to redo uses the recorded size (no new probe) and rewrites the same bytes.
    storage.delete(record_name(records[0].index))
    again = run_generate(auto_config(model, tmp_path / "dataset"), progress=False)
    assert again.shards_done == 1
    assert again.notes == [f"renderer batch size {chosen} (batch_size: auto, as recorded in dataset.json)"]
    assert read_dataset_manifest(storage)["resolved"][RESOLVED_BATCH_SIZE] == chosen
    assert {
        r.tar: hashlib.sha256(storage.read_bytes(r.tar)).hexdigest() for r in committed_shards(storage)
    } == digests
