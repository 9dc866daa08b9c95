"""Counting a prompt's tokens for the text encoder's budget (CLIP: 77, start and end tokens included).

A counter counts one *phrase* (a template slot's text), without the start/end tokens. The composer adds
phrases, separators (", " and " and " are one token each) and the two special tokens. That sum is exact
for CLIP's tokenizer, whose pre-tokenizer splits at whitespace and between letters and punctuation, so BPE
never merges across a phrase boundary.

The default is an estimate that needs no vocabulary: CLIP's BPE keeps common English words whole and splits
rarer ones into pieces of several letters, so one token per word plus one more per seven letters, one per
digit and one per byte of anything else (punctuation, non-ASCII) errs on the high side: a prompt it accepts
fits. Pass the real tokenizer (`TokenizerCounter`) for an exact count; which tokenizer a renderer's text
encoder uses is pipeline's to know (pipeline/prompting.py).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

SPECIAL_TOKENS = 2  # <|startoftext|> and <|endoftext|>
SEPARATOR_TOKENS = 1  # "," or "and" between slots

_PIECES = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


class TokenCounter(Protocol):
    def count(self, phrase: str) -> int:
        """Tokens of one phrase, start/end tokens excluded."""


class EstimatedTokenCounter:
    """A vocabulary-free estimate that errs on the high side for CLIP's BPE (see the module doc)."""

    name = "estimate"

    def count(self, phrase: str) -> int:
        total = 0
        for piece in _PIECES.findall(phrase.lower()):
            first = piece[0]
            if "a" <= first <= "z":
                total += 1 + len(piece) // 7
            elif "0" <= first <= "9":
                total += 1
            else:
                total += len(piece.encode("utf-8"))
        return total


class TokenizerCounter:
    """Exact counts from a real tokenizer (any transformers tokenizer: CLIP's, or the tiny offline one)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.name = type(tokenizer).__name__

    def count(self, phrase: str) -> int:
        return len(self.tokenizer(phrase, add_special_tokens=False, truncation=False)["input_ids"])
