"""A CLIP-format BPE tokenizer written from a word list, fully offline.

Tiny test and CPU-default models (the tiny diffusion pipeline, the tiny CLIP of the trainer) need a real
CLIPTokenizer without any download. CLIP's format is a byte-level BPE: a vocab of byte symbols (each also
in a word-final `</w>` form) plus ranked merges. We add, for every listed word, the merges that build it
left to right; BPE applies merges by rank across all words, so a word shares sub-pieces with others and
usually becomes a few tokens rather than one. Any other text still tokenizes, byte by byte. That is enough
for randomly initialised models; real runs load the real tokenizer with the model.

It lives in prompts, below both stages: its words are the taxonomy's and the prompt templates', and the
tiny diffusion pipeline (pipeline) and the tiny CLIP (trainer) share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import yaml

# transformers is imported inside build_tiny_clip_tokenizer: the tiny CLIP text tower
# (trainer/clip/clip_shaped.py) takes only vocab_and_merges, and must not pay for transformers.

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


@lru_cache(maxsize=1)
def _byte_symbols() -> list[str]:
    """GPT-2 / CLIP's printable stand-ins for the 256 byte values, in CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


# Words of prompt templates (ours and PDM's) that are not attribute values.
_TEMPLATE_WORDS = (
    "a an the of in on at with and wearing carrying photo style person pedestrian man woman who is "
    "seen from view shot by camera full body standing walking high quality realistic blurry lowres "
    "deformed cartoon text watermark extra limbs cropped"
).split()


def default_words() -> list[str]:
    """Every word of the shipped taxonomy plus common template words, so tiny models see real tokens."""
    taxonomy = yaml.safe_load(Path(__file__).with_name("taxonomy.yaml").read_text())
    words: set[str] = set(_TEMPLATE_WORDS)

    def collect(node) -> None:
        if isinstance(node, str):
            words.update(node.lower().split())
        elif isinstance(node, dict):
            for key, value in node.items():
                collect(key)
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(taxonomy)
    return sorted(words)


def vocab_and_merges(
    words: Iterable[str], whole_words: bool = False
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-format (vocab, merges) for `words`. By default each word gets the merges that build it left to
    right, so words share sub-pieces; `whole_words` adds, word after word, the merges still missing for
    BPE (which applies merges by rank across all words) to turn that word into one token: a prompt then
    costs one token per word, as with CLIP's real vocabulary."""
    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    seen_merges: set[tuple[str, str]] = set()
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted({w.lower() for w in words if w}):
        # The same split CLIP's pre-tokenizer makes: letters, digits and other symbols apart.
        for piece in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", word):
            if len(piece) < 2 or not piece.isascii():
                continue
            if whole_words:
                # Merges added later rank lower, so they never change how an earlier word tokenizes.
                parts = _bpe(list(piece[:-1]) + [piece[-1] + "</w>"], ranks)
                while len(parts) > 1:
                    pair = (parts[0], parts[1])
                    ranks[pair] = len(merges)
                    merges.append(pair)
                    vocab.setdefault(pair[0] + pair[1], len(vocab))
                    parts = _bpe(list(piece[:-1]) + [piece[-1] + "</w>"], ranks)
                continue
            left = piece[0]
            for i, ch in enumerate(piece[1:], start=1):
                right = ch + "</w>" if i == len(piece) - 1 else ch
                pair = (left, right)
                if pair not in seen_merges:
                    seen_merges.add(pair)
                    merges.append(pair)
                left = left + right
                vocab.setdefault(left, len(vocab))
    for token in SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding as CLIP applies it: repeatedly merge the adjacent pair of lowest rank."""
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get((parts[i], parts[i + 1]), 1 << 60))
        pair = (parts[best], parts[best + 1])
        if pair not in ranks:
            break
        parts = parts[:best] + [pair[0] + pair[1]] + parts[best + 2 :]
    return parts


def build_tiny_clip_tokenizer(
    words: Iterable[str] | None = None, model_max_length: int = 77, *, whole_words: bool = False
):
    """A transformers CLIPTokenizer over `words` (default: the taxonomy's), built in memory."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges(default_words() if words is None else words, whole_words)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
    )
