"""pipeline/prompting.py: the prompt engine of a `generate` section, and the token counter it names."""

from __future__ import annotations

import pytest

from dppp.foundation.errors import ConfigError
from dppp.pipeline.config import GenerateConfig
from dppp.pipeline.prompting import prompt_engine, token_counter_for
from dppp.prompts.engine import PromptEngine
from dppp.prompts.taxonomy import load_taxonomy
from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer
from dppp.prompts.tokens import EstimatedTokenCounter, TokenizerCounter


def generate(**fields) -> GenerateConfig:
    return GenerateConfig.model_validate({"identities": 8, **fields})


def test_the_engine_is_the_sections_taxonomy_seed_and_identities():
    config = generate(seed=3)
    engine = prompt_engine(config)
    alone = PromptEngine(
        load_taxonomy(None), config.prompts, 3, identities=8, token_counter=EstimatedTokenCounter()
    )
    assert [v.prompt for v in engine.iter_views(range(8))] == [v.prompt for v in alone.iter_views(range(8))]
    assert engine.taxonomy_hash == alone.taxonomy_hash


def test_the_engines_input_errors_are_located_in_the_experiment_file():
    with pytest.raises(ConfigError, match="non-negative") as info:
        prompt_engine(generate(seed=-1), config_file="exp.yaml")
    assert (info.value.file, info.value.path) == ("exp.yaml", "generate.seed")


def test_the_renderers_tokenizer_needs_a_diffusers_renderer():
    with pytest.raises(ConfigError, match="needs a diffusers renderer") as info:
        token_counter_for(generate(prompts={"tokenizer": "renderer"}), "exp.yaml")
    assert (info.value.file, info.value.path) == ("exp.yaml", "generate.prompts.tokenizer")


def test_a_tokenizer_folder_counts_with_that_tokenizer(tmp_path):
    tokenizer = build_tiny_clip_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    counter = token_counter_for(generate(prompts={"tokenizer": str(tmp_path / "tok")}))
    assert isinstance(counter, TokenizerCounter)
    phrase = "a woman in a navy striped hoodie"
    assert counter.count(phrase) == len(tokenizer(phrase, add_special_tokens=False)["input_ids"])
    with pytest.raises(ConfigError, match="cannot load the tokenizer") as info:
        token_counter_for(generate(prompts={"tokenizer": str(tmp_path / "missing")}), "exp.yaml")
    assert info.value.path == "generate.prompts.tokenizer"
