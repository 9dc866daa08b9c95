"""The dataset contract both stages share: what `dppp generate` writes and every reader reads
(docs/shards.md). It imports nothing from the stages, only foundation/ (storage) and prompts/.

    format.py        shard and member names, the member allow-list, object keys
    keys.py          sample keys: (pid, view) <-> 'p000012_v003', the one definition
    limits.py        the size limits a reader holds each member to
    shard_writer.py  the deterministic tar writer (byte-identical shards)
    shard_reader.py  the safe streaming reader (never unpickles or executes)
    records.py       per-shard commit records; reading and writing dataset.json
    manifest.py      what dataset.json holds (config, taxonomy and hash, code version, shard plan)
    listing.py       what a dataset holds, from its object listing
    index.py         index fragments per shard and their merge, index.parquet
    curation.py      curation.parquet: which samples `dppp curate` keeps
    card.py          the dataset card and the wids shard index, for loading elsewhere
"""
