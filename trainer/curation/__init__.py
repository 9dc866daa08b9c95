"""Curation (`dppp curate`): score every generated image and keep the bad ones out of training.

    config.py   the `curate:` section: the judging CLIP, the signals' thresholds, the Ray pool
    signals.py  the signals of one shard from pixels and CLIP features (pure numpy)
    scorer.py   one shard's rows: read, score, decide, publish the shard's file
    job.py      the Ray job: plan, actors (foundation/actor_pool.py), merge, the rejects' contact sheet

The file format (curation.parquet and the per-shard files) is dataset/curation.py: the dataset's
contract, read by `dppp shards stats` and by training (trainer/data/sources.py). docs/curation.md.
"""
