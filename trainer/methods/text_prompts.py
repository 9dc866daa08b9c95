"""Prompt templates with pseudo-word placeholders, and the injection of pseudo-word embeddings.

A template such as "a [S] style photo of a [C] person" is tokenized once: each `[NAME]` becomes one
placeholder token (or `count` of them, e.g. CLIP-ReID's "[X]" -> X1 X2 X3 X4), whose positions are
recorded. Injection looks the template's tokens up in the (frozen) token-embedding table and overwrites
the placeholder positions with the given pseudo-word embeddings, per sample; the text encoder then runs on
that sequence. Everything else in the prompt stays the pretrained words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dppp.trainer.methods.config import PLACEHOLDER_PATTERN


def placeholder_tokens(name: str, count: int = 1) -> list[str]:
    """The added tokenizer tokens for placeholder `[NAME]` (lower case: CLIP's tokenizer lower-cases)."""
    stem = f"<ph_{name.lower()}"
    return [stem + ">"] if count == 1 else [f"{stem}{i}>" for i in range(1, count + 1)]


@dataclass(frozen=True)
class CompiledPrompt:
    template: str
    input_ids: torch.Tensor  # [L] including start and end of text
    slots: dict[str, torch.Tensor]  # placeholder name -> its token positions [count]


def compile_prompt(template: str, tokenizer, counts: dict[str, int] | None = None) -> CompiledPrompt:
    counts = counts or {}

    def expand(match) -> str:
        return " ".join(placeholder_tokens(match[1], counts.get(match[1], 1)))

    ids = tokenizer(PLACEHOLDER_PATTERN.sub(expand, template))["input_ids"]
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        raise ValueError(
            f"prompt template {template!r} is {len(ids)} tokens, more than the text encoder's {limit}"
        )
    slots = {}
    for name in PLACEHOLDER_PATTERN.findall(template):
        positions = []
        for token in placeholder_tokens(name, counts.get(name, 1)):
            token_id = tokenizer.convert_tokens_to_ids(token)
            where = [i for i, value in enumerate(ids) if value == token_id]
            if len(where) != 1:
                raise ValueError(f"placeholder token {token} occurs {len(where)} times in {template!r}")
            positions += where
        slots[name] = torch.tensor(positions, dtype=torch.long, device="cpu")
    return CompiledPrompt(template, torch.tensor(ids, dtype=torch.long, device="cpu"), slots)


def inject(
    prompt: CompiledPrompt, token_embedding: torch.nn.Embedding, words: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, L], token embeddings [B, L, D]) with `words[name]` ([B, D] or [B, count, D]) placed
    at the placeholder positions of `name`. Every placeholder must be given."""
    if set(words) != set(prompt.slots):
        raise ValueError(
            f"prompt {prompt.template!r} needs words for {sorted(prompt.slots)}, got {sorted(words)}"
        )
    device = token_embedding.weight.device
    ids = prompt.input_ids.to(device)
    batch = next(iter(words.values())).shape[0]
    embeds = token_embedding(ids).unsqueeze(0).expand(batch, -1, -1).clone()
    for name, positions in prompt.slots.items():
        word = words[name]
        if word.dim() == 2:
            word = word.unsqueeze(1)
        embeds[:, positions.to(device)] = word.to(embeds.dtype)
    return ids.unsqueeze(0).expand(batch, -1), embeds


def encode_prompt(backbone, prompt: CompiledPrompt, words: dict[str, torch.Tensor]) -> torch.Tensor:
    """Projected end-of-text features [B, embed_dim] of `prompt` with `words` injected."""
    ids, embeds = inject(prompt, backbone.token_embedding, words)
    return backbone.encode_text(ids, embeds)
