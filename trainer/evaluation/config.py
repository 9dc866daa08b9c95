"""`dppp eval`'s config, the experiment's `eval` section. Pydantic models only: every `dppp` command
loads it, and `dppp --help` must stay fast."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from dppp.foundation.errors import UserError
from dppp.foundation.schema import StrictModel

# trainer/data/specs.py (the dataset readers: PIL, the shard reader, storage) is imported inside the
# validator that needs it: a config module must stay light, it is loaded by every command that reads a
# config.


class RerankConfig(StrictModel):
    """k-reciprocal re-ranking (Zhong et al. 2017); the paper's defaults. Off unless enabled."""

    enabled: bool = False
    k1: int = Field(20, ge=1)  # neighbourhood size of the k-reciprocal sets
    k2: int = Field(6, ge=1)  # neighbours averaged by local query expansion (1: none)
    lambda_value: float = Field(0.3, ge=0.0, le=1.0)  # weight of the original distance vs the Jaccard one


class SyntheticSplitConfig(StrictModel):
    """How `synthetic:PATH` datasets are split into query and gallery (dppp.trainer.data.readers.split_synthetic)."""

    seed: int = Field(0, ge=0)
    queries_per_camera: int = Field(1, ge=1)  # per test identity and camera; the rest goes to the gallery
    held_out_pids: int | None = Field(None, ge=1)  # None: every identity is a test identity
    # Leave out what `dppp curate` rejected, as train.data.curation: auto, off, or a curation file's path.
    curation: str = Field("auto", min_length=1)


class EvalConfig(StrictModel):
    # Benchmarks as NAME:PATH (market1501, dukemtmc, msmt17, cuhk03-labeled, cuhk03-detected, synthetic).
    datasets: tuple[str, ...] = ()
    max_rank: int = Field(50, ge=1)  # CMC length
    metric: Literal["cosine", "euclidean"] = "cosine"
    flip: bool = False  # average each image's feature with its mirror image's
    batch_size: int = Field(128, ge=1)
    rerank: RerankConfig = RerankConfig()
    synthetic: SyntheticSplitConfig = SyntheticSplitConfig()

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, specs: tuple[str, ...]) -> tuple[str, ...]:
        from dppp.trainer.data.specs import parse_dataset_spec

        for spec in specs:
            try:
                parse_dataset_spec(spec)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return specs


class ZeroShotConfig(StrictModel):
    """The zero-shot attribute check of a CLIP folder (trainer/evaluation/zero_shot.py), run after pretraining."""

    # Held-out dppp datasets (other people than the pretraining corpus) whose images are classified.
    datasets: tuple[str, ...] = ()
    max_images: int = Field(2000, ge=1)  # per check, taken shard by shard
    taxonomy: Path | None = None  # the class prompts' taxonomy (None: the shipped one)
    ensemble_identities: int = Field(512, ge=1)  # people whose prompts build the class features
    seed: int = Field(9_999_991, ge=0)  # their prompt engine's seed: people no dataset renders
    min_prompts: int = Field(3, ge=1)  # a value with fewer prompts gets no class
    batch_size: int = Field(128, ge=1)
