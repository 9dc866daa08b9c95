"""The experiment config: one YAML per run, a section per stage, each validated before work starts.

    generate:  pipeline.config.GenerateConfig          (prompts, renderer, shards, storage, Ray pool)
    pretrain:  trainer.pretrain_config.PretrainConfig  (image-text pretraining of the tiny CLIP)
    train:     trainer.config.TrainConfig
    curate:    trainer.curation.config.CurateConfig     (`dppp curate`: the judging CLIP, thresholds)
    eval:      trainer.eval_config.EvalConfig

`--set dotted.key=value` overrides are applied to the raw YAML before validation, so an override is
checked exactly like a value written in the file.
"""

from __future__ import annotations

from pathlib import Path

from foundation.config import apply_overrides, read_yaml, validate
from foundation.errors import ConfigError
from foundation.schema import StrictModel
from pipeline.config import GenerateConfig
from trainer.config import TrainConfig
from trainer.curation.config import CurateConfig
from trainer.eval_config import EvalConfig
from trainer.pretrain_config import PretrainConfig


class ExperimentConfig(StrictModel):
    generate: GenerateConfig = GenerateConfig()
    pretrain: PretrainConfig = PretrainConfig()
    train: TrainConfig = TrainConfig()
    curate: CurateConfig = CurateConfig()
    eval: EvalConfig = EvalConfig()


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment YAML. `path=None` gives the built-in defaults."""
    file = str(path) if path is not None else None
    data = read_yaml(path) if path is not None else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            "the top level must be a mapping with generate/pretrain/train/eval sections", file=file
        )
    data = apply_overrides(data, overrides or [], file=file)
    return validate(ExperimentConfig, data, file=file)
