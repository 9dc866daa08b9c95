"""Counter-based random streams: every random number has an address, not a place in a sequence.

Philox is a counter-based generator: its output for counter c under key k is a fixed function of (k, c),
so any draw can be computed directly, in any order, by any process. The key comes from the global seed;
the 256-bit counter addresses the draw:

    counter = [item * blocks_per_item + block, lane, purpose, 0]

purpose IDENTITY: lane = candidate number k (de-duplication redraws), item = pid
purpose VIEW:     lane = pid,                                          item = view index

Each item reads a fixed number of words (rounded up to whole 4-word Philox blocks), so the items of one lane
sit back to back: the views of a pid, or the first candidates of a range of pids, come from ONE generator
call, and a single view or pid still reads exactly the same words on its own.
"""

from __future__ import annotations

import numpy as np

IDENTITY = 1
VIEW = 2
_DOMAIN = 0x64707070  # "dppp": keeps these keys apart from other uses of the same seed
_WORDS_PER_BLOCK = 4


def stream_key(seed: int) -> np.ndarray:
    """The 128-bit Philox key of a global seed (a non-negative integer)."""
    return np.random.SeedSequence([_DOMAIN, seed]).generate_state(2, dtype=np.uint64)


def words_per_item(draws: int) -> int:
    """Words one item reads: `draws` rounded up to whole Philox blocks."""
    return -(-draws // _WORDS_PER_BLOCK) * _WORDS_PER_BLOCK


def raw_words(
    key: np.ndarray, purpose: int, lane: int, first_item: int, items: int, words: int
) -> np.ndarray:
    """(items, words) uint64 array: the words of items first_item .. first_item + items - 1 of a lane."""
    counter = np.array([first_item * (words // _WORDS_PER_BLOCK), lane, purpose, 0], dtype=np.uint64)
    generator = np.random.Philox(key=key, counter=counter)
    return generator.random_raw(items * words).reshape(items, words)


def to_uniform(raw: np.ndarray) -> np.ndarray:
    """uint64 words -> float64 in [0, 1) from their top 53 bits."""
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def to_seed(raw: np.ndarray) -> np.ndarray:
    """uint64 words -> seeds in [0, 2**63), valid for torch and numpy generators."""
    return raw >> np.uint64(1)
