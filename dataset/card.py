"""Loading a dppp dataset elsewhere: the dataset card and the wids shard index at the dataset root.

    <root>/README.md          a Hugging Face dataset card: its YAML `configs:` point `data_files` at the
                              shard tars, so `datasets.load_dataset(ROOT, split="train")` (a folder, or a
                              Hub copy of it) gives one row per image: the decoded image (`jpg`), the pid
                              (`cls`), the metadata (`json`) and the prompt (`txt`); the parquet files
                              (index, fragments) are never taken for data
    <root>/wids-index.json    webdataset's `wids` shard index (random access by sample number): each
                              tar's URL, relative to the index, and its sample count

Both are derived from the commit records (through the index merge, dataset/index.py, which writes them
after index.parquet) and rewritten whole each time, byte-identical for the same committed shards and
dataset.json: they hold no timestamp, no URL of where the dataset lives and nothing from the storage
settings, so no endpoint or credential. docs/shards.md shows the loaders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from dppp.dataset.format import shard_name
from dppp.dataset.records import DATASET_MANIFEST
from dppp.foundation.storage.base import ObjectNotFound, Storage

CARD_NAME = "README.md"
WIDS_INDEX_NAME = "wids-index.json"
WIDS_KIND = "wids-shard-index-v1"


def wids_index(shards: Iterable[tuple[int, int]]) -> bytes:
    """The wids shard index of (shard index, samples) pairs, in shard order; URLs relative to the root."""
    shardlist = [{"url": shard_name(index), "nsamples": count} for index, count in sorted(shards)]
    index = {"__kind__": WIDS_KIND, "wids_version": 1, "name": "dppp", "shardlist": shardlist}
    return (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()


def card_text(manifest: dict[str, Any] | None, shards: int, samples: int) -> str:
    """README.md: the YAML front matter the Hub and `load_dataset` read, then what the dataset is."""
    plan = (manifest or {}).get("plan") or {}
    config = (manifest or {}).get("config") or {}
    renderer_config = config.get("renderer") or {}
    renderer = renderer_config.get("kind", "unknown")
    if renderer_config.get("look"):  # recorded only when not the renderer's default look
        renderer += f", look {renderer_config['look']}"
    output = config.get("output") or {}
    size = f"{output['height']}x{output['width']} {output.get('format', '')}".strip() if output else "?"
    front = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: shards/shard-*.tar",
        "license: other",
        "task_categories:",
        "- image-classification",
        "tags:",
        "- person-re-identification",
        "- synthetic",
        "- webdataset",
        "pretty_name: dppp synthetic person re-identification dataset",
        "---",
    ]
    body = f"""
# dppp synthetic person re-identification dataset

Synthetic people rendered from prompts by dppp (renderer: `{renderer}`, images
{size}): {samples} images of {plan.get("identities", "?")} identities in {shards} WebDataset shards. No
real person is depicted.

Each sample is four members of a tar in `shards/`: `KEY.jpg` (the image), `KEY.cls` (the identity, pid),
`KEY.json` (the metadata: pid, camid, the attributes the prompt was built from) and `KEY.txt` (the
prompt). `dataset.json` holds the config, seed and taxonomy that decide every byte; `index.parquet`
one row per sample (metadata only); `wids-index.json` the shard list for random access.

```python
from datasets import load_dataset

rows = load_dataset("path/to/this/folder", split="train")  # one row per image
rows[0]["jpg"], rows[0]["cls"], rows[0]["json"]["camid"]
```

Other loaders (webdataset, Ray Data, torch): docs/shards.md of dppp.
"""
    return "\n".join(front) + "\n" + body


def write_loading_files(storage: Storage, shards: list[tuple[int, int]]) -> None:
    """Write README.md and wids-index.json for the committed (shard index, samples) pairs."""
    try:
        manifest = json.loads(storage.read_bytes(DATASET_MANIFEST))
    except (ObjectNotFound, ValueError):
        manifest = None  # not made by `dppp generate`, or damaged (verify says so): a plain card
    samples = sum(count for _, count in shards)
    storage.put_bytes(wids_index(shards), WIDS_INDEX_NAME)
    storage.put_bytes(card_text(manifest, len(shards), samples).encode(), CARD_NAME)
