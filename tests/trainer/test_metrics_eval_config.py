"""The `eval` section of the experiment config: defaults, and every field validated with its path named."""

from __future__ import annotations

import pytest

from dppp.config import load_experiment
from dppp.foundation.errors import ConfigError
from dppp.trainer.evaluation.config import EvalConfig


def test_defaults_follow_the_protocol_and_the_paper():
    config = load_experiment(None).eval
    assert config == EvalConfig()
    assert (config.max_rank, config.metric, config.flip, config.batch_size) == (50, "cosine", False, 128)
    assert (config.rerank.enabled, config.rerank.k1, config.rerank.k2, config.rerank.lambda_value) == (
        False,
        20,
        6,
        0.3,
    )
    assert (config.synthetic.seed, config.synthetic.queries_per_camera, config.synthetic.held_out_pids) == (
        0,
        1,
        None,
    )


def test_overrides_are_validated(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("eval:\n  datasets: ['market1501:/data/market', 'synthetic:s3://b/ds']\n  flip: true\n")
    config = load_experiment(path, ["eval.rerank.enabled=true", "eval.synthetic.held_out_pids=100"]).eval
    assert config.datasets == ("market1501:/data/market", "synthetic:s3://b/ds")
    assert config.flip and config.rerank.enabled and config.synthetic.held_out_pids == 100


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ("eval.max_rank=0", "eval.max_rank"),
        ("eval.metric=manhattan", "eval.metric"),
        ("eval.batch_size=-1", "eval.batch_size"),
        ("eval.flip=[1]", "eval.flip"),
        ("eval.rerank.k1=0", "eval.rerank.k1"),
        ("eval.rerank.k2=0", "eval.rerank.k2"),
        ("eval.rerank.lambda_value=1.5", "eval.rerank.lambda_value"),
        ("eval.rerank.lambda=0.5", "eval.rerank.lambda"),
        ("eval.synthetic.queries_per_camera=0", "eval.synthetic.queries_per_camera"),
        ("eval.synthetic.seed=-1", "eval.synthetic.seed"),
        ("eval.synthetic.held_out_pids=0", "eval.synthetic.held_out_pids"),
        ("eval.datasets=['viper:/data/viper']", "eval.datasets"),
        ("eval.datasets=['/data/market']", "eval.datasets"),
        ("eval.top_k=5", "eval.top_k"),
    ],
)
def test_bad_values_name_their_path(override, where):
    with pytest.raises(ConfigError, match=rf"at '{where}"):
        load_experiment(None, [override])


def test_unknown_dataset_message_lists_the_known_names():
    with pytest.raises(ConfigError, match="unknown name 'viper' .*cuhk03-labeled"):
        load_experiment(None, ["eval.datasets=['viper:/data/viper']"])
