"""The prompt engine a generate config describes: its taxonomy, seed, identities, and the token counter of
the text encoder that will read the prompts.

prompts takes only its own inputs (a taxonomy, its prompt config, a seed, a token counter); what a
renderer is, and so which tokenizer it reads prompts with (its registry entry), is pipeline's to know.
"""

from __future__ import annotations

from dppp.foundation.errors import ConfigError
from dppp.pipeline.config import GenerateConfig
from dppp.pipeline.renderers.registry import kinds, renderer_kind
from dppp.prompts.engine import EngineInputError, PromptEngine
from dppp.prompts.taxonomy import load_taxonomy
from dppp.prompts.tokens import EstimatedTokenCounter, TokenCounter, TokenizerCounter

# transformers is imported inside the tokenizer loader: only the 'renderer' or a named tokenizer needs it, and
# every generate actor imports this module.


def token_counter_for(config: GenerateConfig, config_file: str | None = None) -> TokenCounter:
    """The counter `generate.prompts.tokenizer` names: the estimate, the renderer's tokenizer, or a folder."""
    choice = config.prompts.tokenizer
    if choice == "estimate":
        return EstimatedTokenCounter()
    if choice == "renderer":
        kind = renderer_kind(config.renderer)
        if kind.tokenizer is None:
            readers = " or ".join(k.name for k in kinds() if k.tokenizer is not None)
            raise ConfigError(
                f"tokenizer 'renderer' needs a {readers} renderer, not {kind.name!r}",
                file=config_file,
                path="generate.prompts.tokenizer",
            )
        found = kind.tokenizer(config.renderer)
        source, subfolder, revision = found.source, found.subfolder, found.revision
    else:  # a folder or hub id holding the tokenizer itself ("", not None: transformers joins it to paths)
        source, subfolder, revision = choice, "", None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            source, subfolder=subfolder, revision=revision, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot load the tokenizer from {source!r}: {reason} (without the model, "
            "generate.prompts.tokenizer: estimate still plans and samples)",
            file=config_file,
            path="generate.prompts.tokenizer",
        ) from None
    return TokenizerCounter(tokenizer)


def prompt_engine(config: GenerateConfig, *, config_file: str | None = None) -> PromptEngine:
    """The engine of the `generate` section, its identities precomputed; a problem with its seed or
    identity count is located at that key of `config_file`."""
    taxonomy = load_taxonomy(config.prompts.taxonomy)
    counter = token_counter_for(config, config_file)
    try:
        return PromptEngine(
            taxonomy, config.prompts, config.seed, identities=config.identities, token_counter=counter
        )
    except EngineInputError as exc:
        raise ConfigError(exc.problem, file=config_file, path=f"generate.{exc.path}") from None
