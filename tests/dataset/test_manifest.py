"""dataset.json's content (dataset/manifest.py), as records.py writes it and readers read it back."""

import json

from dppp.dataset.manifest import DATASET_FORMAT, dataset_manifest
from dppp.dataset.records import read_dataset_manifest, read_dataset_plan, write_dataset_manifest
from dppp.foundation.storage.urls import open_storage
from dppp.prompts.taxonomy import load_taxonomy


def test_manifest_holds_config_taxonomy_and_plan_and_is_written_without_secrets(tmp_path):
    taxonomy = load_taxonomy(None)
    config = {"identities": 5, "storage": {"secret_access_key": "hunter2"}}
    manifest = dataset_manifest(
        config=config,
        fingerprint="f" * 64,
        shard_fingerprint="s" * 64,
        taxonomy=taxonomy,
        identities=5,
        ids_per_shard=2,
        shards=3,
        images=20,
    )
    assert manifest["format"] == DATASET_FORMAT == "dppp-dataset/1"
    assert manifest["taxonomy_sha256"] == taxonomy.hash and manifest["taxonomy"] == taxonomy.as_dict()
    assert manifest["plan"] == {"identities": 5, "ids_per_shard": 2, "shards": 3, "images": 20}
    storage = open_storage(str(tmp_path))
    write_dataset_manifest(storage, manifest)
    text = storage.read_bytes("dataset.json").decode()
    assert "hunter2" not in text and text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    back = read_dataset_manifest(storage)
    plan = read_dataset_plan(back, "dataset.json")
    assert (plan.shards, plan.images, plan.identities) == (3, 20, 5)
    assert back["fingerprint"] == "f" * 64 and back["config"]["identities"] == 5
