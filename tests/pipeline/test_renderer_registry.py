"""The renderer registry: a kind defined outside the pipeline (tests/helpers/toy_renderer.py, one module
and one registry entry) is a `generate.renderer.kind` like the built-in ones, end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from dppp.cli import main
from dppp.config import load_experiment
from dppp.dataset.keys import sample_key
from dppp.dataset.listing import committed_shards
from dppp.dataset.shard_reader import read_shard
from dppp.foundation.errors import ConfigError
from dppp.foundation.schema import StrictModel
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.prompting import prompt_engine, token_counter_for
from dppp.pipeline.renderer import RendererKind
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig
from dppp.pipeline.renderers.procedural.renderer import ProceduralRendererConfig
from dppp.pipeline.renderers.registry import kinds, load_renderer, register, renderer_kind
from tests.helpers.toy_renderer import TOY, ToyRenderer, ToyRendererConfig, toy_pixels

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo.yaml")
TOY_SETS = [
    "generate.renderer.kind=toy",
    "generate.renderer.height=32",
    "generate.renderer.width=16",
    "generate.output.height=32",
    "generate.output.width=16",
    "generate.output.format=png",
]


def toy_config(out, *sets: str):
    return load_experiment(DEMO, [f"generate.out={out}", *TOY_SETS, *sets]).generate


def test_the_built_in_kinds_and_the_toy_are_registered_under_their_config_kind():
    names = [kind.name for kind in kinds()]
    assert names[:2] == ["procedural", "diffusers"] and "toy" in names
    assert renderer_kind(ProceduralRendererConfig()).config is ProceduralRendererConfig
    assert renderer_kind(DiffusersRendererConfig(model="org/model")).uses_gpu
    assert renderer_kind(ToyRendererConfig()) is TOY


def test_a_registered_kind_is_a_value_of_generate_renderer_kind(tmp_path):
    config = toy_config(tmp_path, "generate.renderer.batch_size=5")
    assert isinstance(config.renderer, ToyRendererConfig) and config.renderer.batch_size == 5
    # dumped with its own fields in their own order (dataset.json and the config fingerprint read this)
    assert config.model_dump()["renderer"] == {"kind": "toy", "height": 32, "width": 16, "batch_size": 5}
    renderer = load_renderer(config.renderer)
    assert isinstance(renderer, ToyRenderer) and renderer.batch_size == 5


def test_a_bad_renderer_section_is_located_and_lists_the_registered_kinds(tmp_path):
    with pytest.raises(ConfigError) as unknown:
        toy_config(tmp_path, "generate.renderer.kind=painting")
    assert "at 'generate.renderer': Input tag 'painting'" in str(unknown.value)
    assert "expected tags: 'procedural', 'diffusers', 'toy'" in str(unknown.value)
    with pytest.raises(ConfigError) as bad_value:
        toy_config(tmp_path, "generate.renderer.height=2")
    assert "at 'generate.renderer.toy.height'" in str(bad_value.value)


def test_tokenizer_renderer_needs_a_kind_that_reads_text(tmp_path):
    config = toy_config(tmp_path, "generate.prompts.tokenizer=renderer")
    with pytest.raises(ConfigError, match="tokenizer 'renderer' needs a diffusers renderer, not 'toy'"):
        token_counter_for(config)


def test_dry_run_of_a_kind_without_a_measured_rate_says_so(tmp_path, capsys):
    sets = [arg for s in TOY_SETS for arg in ("--set", s)]
    assert main(["generate", DEMO, "--out", str(tmp_path / "d"), "--dry-run", *sets]) == 0
    assert "no measured rendering rate applies" in capsys.readouterr().out


def test_a_taken_kind_name_cannot_be_registered_again_by_another_entry():
    register(TOY)  # the same entry again (its module imported twice) is no change
    with pytest.raises(ValueError, match="renderer kind 'toy' is already registered"):
        register(RendererKind(ToyRendererConfig, load=lambda config: None))
    assert renderer_kind(ToyRendererConfig()) is TOY

    class Nameless(StrictModel):
        height: int = 8

    with pytest.raises(ValueError, match="Nameless needs a `kind: Literal"):
        register(RendererKind(Nameless, load=lambda config: None))


def test_a_config_no_entry_holds_is_refused():
    class Stray(StrictModel):
        kind: Literal["stray"] = "stray"

    with pytest.raises(TypeError, match="Stray is not the config of a registered renderer kind"):
        renderer_kind(Stray())


def _tar_digests(out) -> dict[str, str]:
    storage = open_storage(str(out))
    return {r.tar: hashlib.sha256(storage.read_bytes(r.tar)).hexdigest() for r in committed_shards(storage)}


@pytest.mark.slow
def test_dppp_generate_renders_the_toy_kind_into_shards_that_hold_its_pixels(tmp_path, ray_instance):
    out = tmp_path / "toy"
    sets = [arg for s in TOY_SETS for arg in ("--set", s)]
    argv = ["generate", DEMO, "--out", str(out), "--identities", "4", "--ids-per-shard", "2", *sets]
    assert main([*argv, "--workers", "2"]) == 0

    config = toy_config(out, "generate.identities=4", "generate.ids_per_shard=2")
    engine = prompt_engine(config)
    expected = {sample_key(view.pid, view.view): view for pid in range(4) for view in engine.views(pid)}
    storage = open_storage(str(out))
    records = committed_shards(storage)
    assert len(records) == 2
    samples = [s for r in records for s in read_shard(str(out / r.tar), decode_images=True)]
    assert sorted(s["__key__"] for s in samples) == sorted(expected)
    for sample in samples:
        view = expected[sample["__key__"]]
        assert set(sample) - {"__key__", "__url__"} == {"png", "json", "txt", "cls"}
        assert sample["png"].size == (16, 32)  # (width, height)
        assert np.array_equal(np.asarray(sample["png"]), np.asarray(toy_pixels(view, 32, 16)))
        assert sample["json"]["renderer"] == {"name": "toy", "size": [32, 16]}
        assert sample["json"]["pid"] == int(sample["cls"]) == view.pid and sample["txt"] == view.prompt

    # deterministic: one worker instead of two gives the same bytes
    again = tmp_path / "again"
    assert main(["generate", DEMO, "--out", str(again), *argv[4:], "--workers", "1"]) == 0
    assert _tar_digests(again) == _tar_digests(out)
