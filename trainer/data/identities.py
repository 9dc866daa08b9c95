"""Which people a dppp dataset holds, by appearance, so that pretraining and Re-ID splits stay apart.

A pid is only a label within one dataset: two datasets generated with different seeds both have a pid 7,
of two different people, and could (rarely) hold the same-looking person under two pids. What makes a
person here is what the prompt engine keeps distinct within a dataset (prompts/dedup.py): the visible
identity attributes, i.e. every identity dimension of the taxonomy, with a value nobody can see (its
`hidden_when` holds, e.g. the colour of a bag when there is no bag) left out. `people(url)` reads each
committed pid's attributes from index.parquet (or, when the index does not cover every committed shard,
from the shards' json members; no image is read) and keeps a short digest of that appearance.

A pretrained CLIP's model card lists the digests of its pretraining people; `check_disjoint` refuses a
Re-ID split that shares any of them (`dppp train` runs it for every dppp source).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from dppp.dataset.index import build_index
from dppp.dataset.limits import ShardStorageConfig
from dppp.dataset.listing import committed_shards
from dppp.dataset.records import ATTRIBUTE_PREFIX, read_dataset_manifest, read_index
from dppp.foundation.errors import DataError
from dppp.foundation.storage.urls import open_storage

DIGEST_CHARS = 16  # 64 bits of sha256: no accidental collision among millions of people


def appearance_key(attributes: dict[str, Any], identity_dims: dict[str, Any]) -> str:
    """ "name=value|..." over the identity dimensions in name order, "-" for a hidden value."""
    parts = []
    for name in sorted(identity_dims):
        hidden = (identity_dims[name] or {}).get("hidden_when")
        value = attributes.get(name)
        if hidden and all(_matches(attributes.get(k), v) for k, v in hidden.items()):
            value = "-"
        parts.append(f"{name}={value}")
    return "|".join(parts)


def _matches(value: Any, condition: Any) -> bool:
    options = condition if isinstance(condition, list) else [condition]
    return str(value) in {_yaml_text(o) for o in options}


def _yaml_text(value: Any) -> str:
    # YAML's yes/no load as booleans; attributes store them as the taxonomy's words.
    return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def people(url: str, storage_config: ShardStorageConfig | None = None) -> dict[int, str] | None:
    """pid -> appearance digest of every committed pid of the dppp dataset at `url`; None when its
    dataset.json records no taxonomy (nothing tells which attributes make a person)."""
    storage = open_storage(url, storage_config or ShardStorageConfig())
    taxonomy = read_dataset_manifest(storage).get("taxonomy")
    identity_dims = taxonomy.get("identity") if isinstance(taxonomy, dict) else None
    if not isinstance(identity_dims, dict) or not identity_dims:
        return None
    records = committed_shards(storage)
    committed = {pid for record in records for pid in record.pids}
    try:
        table = read_index(storage)
        if not committed <= set(table.column("pid").to_pylist()):
            raise DataError("stale index")
    except DataError:
        table = build_index(storage, records)
    columns = [ATTRIBUTE_PREFIX + name for name in identity_dims]
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{storage.url}: its samples do not record the identity attributes {missing}")
    out: dict[int, str] = {}
    rows = table.select(["pid", *columns]).to_pylist()
    for row in rows:
        pid = int(row["pid"])
        if pid in committed and pid not in out:
            attributes = {name: row[ATTRIBUTE_PREFIX + name] for name in identity_dims}
            out[pid] = digest(appearance_key(attributes, identity_dims))
    return dict(sorted(out.items()))


def check_disjoint(
    seen: Iterable[str], url: str, what: str, storage_config: ShardStorageConfig | None = None
) -> int:
    """DataError when a person of the dataset at `url` is among the `seen` digests (`what` says where they
    were seen, e.g. "pretraining corpus of backbone models/x"); returns how many people were compared."""
    mine = people(url, storage_config)
    if mine is None:
        return 0
    seen = set(seen)
    shared = sorted(pid for pid, d in mine.items() if d in seen)
    if shared:
        raise DataError(
            f"{url}: {len(shared)} of its {len(mine)} identities (pids {shared[:5]}"
            f"{' ...' if len(shared) > 5 else ''}) also appear in the {what}; train and test "
            "people must be disjoint from it: generate this dataset with another seed"
        )
    return len(mine)
