"""The experiment config: sections, overrides, and errors that name the file and the path."""

from __future__ import annotations

import pytest

from dppp.cli import main
from dppp.config import load_experiment
from dppp.foundation.config import apply_overrides
from dppp.foundation.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_demo_config_loads():
    config = load_experiment("configs/demo.yaml")
    assert config.generate.renderer.kind == "procedural"
    assert config.generate.identities == 64


def test_override_is_validated_like_the_file(tmp_path):
    path = write(tmp_path, "generate:\n  seed: 1\n")
    assert load_experiment(path, ["generate.seed=7"]).generate.seed == 7
    with pytest.raises(ConfigError, match=r"at 'generate.identities'"):
        load_experiment(path, ["generate.identities=0"])


def test_unknown_key_names_file_and_path(tmp_path):
    path = write(tmp_path, "generate:\n  sead: 1\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert str(path) in message and "generate.sead" in message and "unknown key" in message


def test_wrong_type_and_yaml_syntax(tmp_path):
    with pytest.raises(ConfigError, match="generate.seed"):
        load_experiment(write(tmp_path, "generate:\n  seed: [1]\n"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_experiment(write(tmp_path, "generate: [\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_experiment(tmp_path / "missing.yaml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_cli_user_error_exits_2_without_traceback(tmp_path, capsys):
    path = write(tmp_path, "generate:\n  sead: 1\n")
    from dppp.commands.common import load_config

    with pytest.raises(ConfigError):
        load_config(path, None)
    assert main(["no-such-command"]) == 2
    capsys.readouterr()


def test_endpoint_url_sets_each_named_storage_section_and_a_set_wins():
    from dppp.commands.common import load_config

    endpoint = "http://127.0.0.1:9000"
    config = load_config(None, [], endpoint_url=endpoint, storage=("generate.storage", "train.data.storage"))
    assert config.generate.storage.endpoint_url == config.train.data.storage.endpoint_url == endpoint
    assert config.pretrain.data.storage.endpoint_url is None  # only the sections the command reads
    chosen = load_config(
        None,
        ["generate.storage.endpoint_url=http://elsewhere:9000"],
        endpoint_url=endpoint,
        storage=("generate.storage",),
    )
    assert chosen.generate.storage.endpoint_url == "http://elsewhere:9000"


@pytest.mark.parametrize("command", ["generate", "train", "pretrain", "eval", "shards verify"])
def test_every_command_speaks_the_same_flags(command, capsys):
    """One vocabulary: --endpoint-url wherever storage is read; --data for the data a command reads;
    --progress-every on the batch jobs."""
    assert main([*command.split(), "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--endpoint-url" in shown
    if command in ("train", "pretrain", "eval"):
        assert "--data" in shown and "--dataset" not in shown
    if command in ("generate", "train", "pretrain", "shards verify"):
        assert "--progress-every" in shown
