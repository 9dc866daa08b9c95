"""The `data` section of a training run (`train.data`, `pretrain.data`): where the images come from, how
they are batched and augmented. Pure pydantic, like every config model."""

from __future__ import annotations

from pydantic import Field, model_validator

from dppp.dataset.limits import ShardStorageConfig
from dppp.foundation.schema import StrictModel


class AugmentConfig(StrictModel):
    """Training augmentation (trainer/data/transforms.py); Bag-of-Tricks defaults (Luo et al. 2019)."""

    enabled: bool = True
    flip_p: float = Field(0.5, ge=0, le=1)
    pad: int = Field(10, ge=0)  # zero-pad each side by this many pixels, then crop back at random
    erase_p: float = Field(0.5, ge=0, le=1)
    erase_area: tuple[float, float] = (0.02, 0.4)  # fraction of the image one erased rectangle covers
    erase_aspect: float = Field(0.3, gt=0, le=1)  # aspect ratio drawn log-uniformly in [a, 1/a]

    @model_validator(mode="after")
    def _area_range(self) -> AugmentConfig:
        low, high = self.erase_area
        if not 0 < low <= high <= 1:
            raise ValueError(f"erase_area must satisfy 0 < low <= high <= 1, got {list(self.erase_area)}")
        return self


class DataConfig(StrictModel):
    """Where the training images come from and how they are batched (trainer/data/)."""

    # Dataset URLs (local, file://, s3://) of dppp datasets, or NAME:PATH Re-ID folders (market1501:...).
    sources: tuple[str, ...] = ()
    ids_per_batch: int = Field(16, ge=2)  # P: identities per batch (the triplet loss needs 2 or more)
    images_per_id: int = Field(4, ge=1)  # K: images of each identity in a batch
    # Identities a loader worker holds before it forms batches (more = more mixing across shards);
    # None: 2 x ids_per_batch.
    pool_identities: int | None = Field(None, ge=2)
    num_workers: int = Field(2, ge=0)  # DataLoader processes per training worker (0: in the training loop)
    prefetch_batches: int = Field(2, ge=1)  # per DataLoader process
    folder_ids_per_unit: int = Field(8, ge=1)  # Re-ID folders are streamed in groups of this many identities
    # Leave out what `dppp curate` rejected: auto (URL/curation.parquet of a dppp dataset when it has one),
    # off, or the path / URL of a curation file (one dppp dataset only). docs/curation.md.
    curation: str = Field("auto", min_length=1)
    augment: AugmentConfig = AugmentConfig()
    storage: ShardStorageConfig = ShardStorageConfig()
