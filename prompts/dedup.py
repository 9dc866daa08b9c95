"""Distinct identities: the appearance signature and how many distinct appearances a taxonomy allows.

The appearance signature of a person is the tuple of identity attribute codes, with every value nobody can
see (`hidden_when`, e.g. the colour of a bag when there is no bag) replaced by -1. Two pids with the same
signature would look like the same person, which poisons Re-ID labels, so the engine keeps them apart:
the identity of pid p is the first candidate draw k = 0, 1, 2, ... whose signature no lower pid has. This
depends on the pids below p only, so pid p gets the same identity whatever range is asked or which worker
asks; a worker computes the table for the pid range it needs once (a fraction of a second per 10k pids).
"""

from __future__ import annotations

import numpy as np

from dppp.prompts.sampler import row_mask
from dppp.prompts.taxonomy import MAX_CHECKED_RULES, Taxonomy


def signatures(taxonomy: Taxonomy, codes: np.ndarray) -> list[bytes]:
    """One hashable signature per row of identity codes (columns 0 .. num_identity - 1)."""
    masked = np.ascontiguousarray(codes[:, : taxonomy.num_identity], dtype=np.int32)
    hidden = [dim for dim in taxonomy.identity_dims if dim.hidden is not None]
    if hidden:
        masked = masked.copy()
        for dim in hidden:
            masked[dim.hidden.holds(codes), dim.column] = -1
    return [row.tobytes() for row in masked]


def distinct_lower_bound(taxonomy: Taxonomy) -> int:
    """A cheap lower bound: at every dimension a person can take at least m_d values (the fewest any rule
    combination leaves), and dimensions that can be hidden count once; different paths through that
    pruned tree first differ in a visible dimension, so they are distinct appearances."""
    bound = 1
    for dim in taxonomy.identity_dims:
        if dim.hidden is not None or len(dim.rules) > MAX_CHECKED_RULES:
            continue  # counts once: hidden sometimes, or too many rule combinations to find the fewest
        bound *= min(int((dim.weights_for(mask) > 0).sum()) for mask in dim.consistent_masks())
    return bound


class _Budget(Exception):
    pass


def count_distinct(taxonomy: Taxonomy, limit: int, *, node_budget: int = 2_000_000) -> int | None:
    """Distinct reachable appearance signatures, counted up to `limit` by walking every allowed combination.
    None when the walk would take more than `node_budget` steps (then the answer is not known)."""
    dims = taxonomy.identity_dims
    row = [0] * taxonomy.num_identity
    seen: set[tuple[int, ...]] = set()
    allowed: dict[tuple[int, int], tuple[int, ...]] = {}
    nodes = 0

    def walk(depth: int) -> bool:
        nonlocal nodes
        if depth == len(dims):
            seen.add(
                tuple(-1 if d.hidden is not None and d.hidden.holds_row(row) else row[d.column] for d in dims)
            )
            return len(seen) >= limit
        dim = dims[depth]
        mask = row_mask(dim, row)
        codes = allowed.get((depth, mask))
        if codes is None:
            codes = allowed[(depth, mask)] = tuple(np.flatnonzero(dim.weights_for(mask) > 0).tolist())
        for code in codes:
            nodes += 1
            if nodes > node_budget:
                raise _Budget
            row[dim.column] = code
            if walk(depth + 1):
                return True
        return False

    try:
        walk(0)
    except _Budget:
        return None
    return len(seen)


def available_appearances(taxonomy: Taxonomy, wanted: int) -> int | None:
    """None when at least `wanted` distinct appearances exist (or it cannot be told cheaply), else how many."""
    if wanted <= distinct_lower_bound(taxonomy):
        return None
    count = count_distinct(taxonomy, wanted)
    return count if count is not None and count < wanted else None
