"""The streaming training loader: committed shards -> exact P x K identity-balanced batches.

    data = open_training_data(["s3://bucket/demo", "market1501:/data/market"], storage_config)
    stream = PKBatchStream(data, config.data, image_size, seed=0, epoch=3, rank=1, world=2)
    loader = make_loader(stream, config.data)            # batch_size=None: each item IS a batch
    for batch in loader: ...                              # exactly stream.steps batches, on every rank

The unit of streaming is a *unit*: a committed shard of a dppp dataset, or a group of identities of a
Re-ID folder. Units hold whole identities, so a batch can be assembled from whatever units one loader
process has read, without seeing any other process's data.

Everything about an epoch's batches is decided up front from the shards' commit records (which
identity, which of its images), without reading an image: `plan_epoch` shuffles the unit list with
(seed, epoch), gives each rank an equal, disjoint slice (Ray ranks are invisible to webdataset's own node
splitting, so the split is done here), deals the rank's units to its DataLoader processes, and plans each
process's batches. Because every rank can compute every other rank's plan, all ranks agree on
`steps` (the smallest rank's batch count) and each rank trims its plan to exactly that many batches: DDP
never waits on a rank that ran out. The same plan makes resume exact: a run restarted at batch b of an
epoch skips the first b batches of the plan without decoding them.

The modules, one concept each:

    specs.py        what a --data spec names (a dppp dataset or a NAME:PATH folder)
    sources.py      --data sources (dppp datasets, Re-ID folders) -> units of whole identities
    plan.py         the epoch plan: which units and batches each rank and loader process has
    unit_reader.py  one unit's images with their style labels and words, read in one go
    streams.py      PKBatchStream (one rank's P x K batches of an epoch) and AllImagesStream (the bank pass)
    loader.py       DataLoaders over the streams: a phase's epochs fed by loader processes that persist
"""
