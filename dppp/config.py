"""The experiment config: one YAML per run, a section per stage, each validated before work starts.

    generate:  pipeline.config.GenerateConfig          (prompts, renderer, shards, storage, Ray pool)
    pretrain:  dppp.trainer.pretraining.config.PretrainConfig  (image-text pretraining of the tiny CLIP)
    train:     dppp.trainer.training.config.TrainConfig
    curate:    trainer.curation.config.CurateConfig     (`dppp curate`: the judging CLIP, thresholds)
    eval:      dppp.trainer.evaluation.config.EvalConfig

`--set dotted.key=value` overrides are applied to the raw YAML before validation, so an override is
checked exactly like a value written in the file.
"""

from __future__ import annotations

from pathlib import Path

from dppp.foundation.config import apply_overrides, read_yaml, validate
from dppp.foundation.errors import ConfigError
from dppp.foundation.schema import StrictModel
from dppp.pipeline.config import GenerateConfig
from dppp.trainer.curation.config import CurateConfig
from dppp.trainer.evaluation.config import EvalConfig
from dppp.trainer.pretraining.config import PretrainConfig
from dppp.trainer.training.config import TrainConfig


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
