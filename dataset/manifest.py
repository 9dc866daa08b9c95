"""What dataset.json holds: the shape of a dataset's description of itself. dataset/records.py reads and
writes it (secrets stripped, sorted keys); `dppp generate` (pipeline/generate.py) supplies the values.

    format              'dppp-dataset/1'
    code_version        the dppp version that generated it
    config              the resolved generate config (secrets stripped when written)
    fingerprint         hash of everything that decides the dataset's bytes (a resume must match it)
    shard_fingerprint   the same without the identity count: what each shard's record carries
    taxonomy, taxonomy_sha256   the taxonomy as plain data, and its hash
    plan                identities, ids_per_shard, shards, images (records.DatasetPlan: what readers check)
    resolved            settings an earlier run measured (batch_size: auto), added by the generator later
"""

from __future__ import annotations

from typing import Any

from dppp.foundation import __version__
from dppp.prompts.taxonomy import Taxonomy

DATASET_FORMAT = "dppp-dataset/1"


def dataset_manifest(
    *,
    config: dict[str, Any],
    fingerprint: str,
    shard_fingerprint: str,
    taxonomy: Taxonomy,
    identities: int,
    ids_per_shard: int,
    shards: int,
    images: int,
) -> dict[str, Any]:
    """dataset.json's content for a dataset generated from `config` (its JSON dump) into `shards` shards."""
    return {
        "format": DATASET_FORMAT,
        "code_version": __version__,
        "config": config,
        "fingerprint": fingerprint,
        "shard_fingerprint": shard_fingerprint,
        "taxonomy_sha256": taxonomy.hash,
        "taxonomy": taxonomy.as_dict(),
        "plan": {
            "identities": identities,
            "ids_per_shard": ids_per_shard,
            "shards": shards,
            "images": images,
        },
    }
