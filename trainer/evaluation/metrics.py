"""Re-ID ranking metrics under the Market-1501 protocol (CMC, mAP, mINP), and k-reciprocal re-ranking.

The numbers are exactly those of the per-query loop popular toolkits use (`tests.helpers.metrics_reference`,
torchreid / fast-reid `eval_market1501`):

- for each query, gallery entries with the same pid AND the same camid are ignored;
- queries left with no true match are skipped (counted in `num_skipped`), the rest are `num_valid`;
- CMC uses the cumulative-hit convention (rank-k is 1 for a query once any true match is in its top k),
  averaged over valid queries, always `max_rank` long: when the gallery left after the exclusion is shorter
  than `max_rank`, the curve holds its last value (every valid query has been hit by then);
- AP is the mean over a query's true matches of the precision at each hit; mINP averages
  (number of true matches) / (rank of the hardest true match);
- ties in distance are broken by gallery index, as a stable argsort would.

How it is fast. The loop argsorts every row (the stable argsort alone costs ~5 s at Market scale on one
core) and then walks each row in Python. But all the metrics need is the rank of each true match in the
filtered ranking, and true matches are few (a pid has tens of gallery images, the gallery thousands). So
per chunk of queries: count, for each true match, the gallery entries that precede it (strictly closer, or
equally close with a smaller index), and subtract the excluded same-camera entries among them. Only
entries no farther than the row's deepest true match can precede one; with a useful model they are a few
hundred of 16k, so just those are packed, sorted by value (not argsorted) and binary-searched, all rows at
once. CMC/AP/INP are then read off the ranks. Exact, tie rule included; `tests.helpers.metrics_reference` is the
oracle in the tests and the baseline in benchmarks/bench_metrics.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dppp.foundation.errors import DataError

# Bytes of working memory one chunk of query rows may take, sized for the worst case (see evaluate_ranking).
# At Market scale (3,368 x 15,913) the measured peak is 20-35 MiB besides the input, for any model.
_CHUNK_BUDGET_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class RankingResult:
    cmc: np.ndarray  # float64, length max_rank: cmc[k-1] is the rank-k accuracy over valid queries
    mAP: float
    mINP: float
    num_valid: int  # queries with at least one true match left after the same-camera exclusion
    num_skipped: int  # queries without one: left out of every average

    def rank(self, k: int) -> float:
        """Rank-k accuracy (k is 1-based)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank {k} is outside 1..{len(self.cmc)}")
        return float(self.cmc[k - 1])

    def summary(self) -> dict[str, float | int]:
        """The figures a report shows: rank-1/5/10 (those within max_rank), mAP, mINP, query counts."""
        out: dict[str, float | int] = {f"rank{k}": self.rank(k) for k in (1, 5, 10) if k <= len(self.cmc)}
        out.update(mAP=self.mAP, mINP=self.mINP, num_valid=self.num_valid, num_skipped=self.num_skipped)
        return out


def evaluate_ranking(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    *,
    chunk_size: int | None = None,
) -> RankingResult:
    """Market-1501 protocol metrics of a (num_query x num_gallery) distance matrix (smaller = closer).

    `distmat` may be any array-like numpy accepts (a CPU torch tensor included); it is never modified.
    `chunk_size` (query rows per chunk) defaults to what fits the working-memory budget.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a).ravel() for a in (q_pids, g_pids, q_camids, g_camids))
    _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    num_q, num_g = distmat.shape

    # Each query's candidate true matches: the gallery entries of its pid, as one slice of the gallery
    # sorted by pid (start, count). Most queries' whole work happens inside this small set.
    by_pid = np.argsort(g_pids, kind="stable")
    pids_sorted = g_pids[by_pid]
    uniq, starts, counts = np.unique(pids_sorted, return_index=True, return_counts=True)
    q_start = q_count = np.zeros(num_q, np.int64)
    if len(uniq):
        slot = np.minimum(np.searchsorted(uniq, q_pids), len(uniq) - 1)
        present = uniq[slot] == q_pids
        q_start, q_count = np.where(present, starts[slot], 0), np.where(present, counts[slot], 0)

    candidates = np.flatnonzero(q_count > 0)
    if chunk_size is None:
        widest = int(q_count.max()) if num_q else 0
        # Worst case per gallery entry: a mask byte, plus either a sorted copy and a gathered copy of the
        # row (dense case) or ~40 bytes of indices for at most a quarter of the row (packed case, see
        # _count_closer); plus the (widest x widest) same-pid comparisons.
        per_row = num_g * (12 + 2 * distmat.itemsize) + 8 * widest * widest + 64 * widest
        chunk_size = max(1, _CHUNK_BUDGET_BYTES // max(per_row, 1))

    first_ranks, aps, inps = [], [], []
    for lo in range(0, len(candidates), chunk_size):
        rows = candidates[lo : lo + chunk_size]
        ranks, num_true = _true_match_ranks(
            distmat, rows, q_start[rows], q_count[rows], by_pid, g_camids, q_camids[rows]
        )
        ranks, num_true = ranks[num_true > 0], num_true[num_true > 0]
        if not len(num_true):
            continue
        hits = np.arange(1, ranks.shape[1] + 1)
        inside = hits[None, :] <= num_true[:, None]
        # AP: the m-th true match (1-based) found at rank r_m contributes precision m / r_m.
        aps.append(np.where(inside, hits / ranks, 0.0).sum(axis=1) / num_true)
        inps.append(num_true / ranks[np.arange(len(num_true)), num_true - 1])
        first_ranks.append(ranks[:, 0])

    num_valid = int(sum(len(a) for a in aps))
    if num_valid == 0:
        return RankingResult(np.zeros(max_rank), 0.0, 0.0, 0, num_q)
    first = np.concatenate(first_ranks)
    hist = np.bincount(first[first <= max_rank] - 1, minlength=max_rank)[:max_rank]
    cmc = np.cumsum(hist).astype(np.float64) / num_valid
    return RankingResult(
        cmc=cmc,
        mAP=float(np.mean(np.concatenate(aps))),
        mINP=float(np.mean(np.concatenate(inps))),
        num_valid=num_valid,
        num_skipped=num_q - num_valid,
    )


def _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank) -> None:
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query x num_gallery), got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    for name, arr, n in (
        ("q_pids", q_pids, num_q),
        ("q_camids", q_camids, num_q),
        ("g_pids", g_pids, num_g),
        ("g_camids", g_camids, num_g),
    ):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries, distmat has {n} along that axis")
    if not np.issubdtype(distmat.dtype, np.number) or np.issubdtype(distmat.dtype, np.complexfloating):
        raise ValueError(f"distmat must hold real numbers, got dtype {distmat.dtype}")
    if not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    # min() propagates NaN: one pass and no temporary array, unlike isnan().any().
    if np.issubdtype(distmat.dtype, np.floating) and distmat.size and np.isnan(distmat.min()):
        raise DataError(
            f"the distance matrix holds {int(np.isnan(distmat).sum())} NaN value(s): "
            "the features are not finite (a diverged model or a broken checkpoint?)"
        )


def _true_match_ranks(distmat, rows, start, count, by_pid, g_camids, q_cam):
    """For each query row: the 1-based ranks of its true matches in its filtered ranking, ascending.

    Returns (ranks (rows x widest), num_true (rows,)); ranks beyond num_true hold a sentinel past the end.
    """
    num_g = distmat.shape[1]
    widest = int(count.max())
    slot = np.arange(widest)
    in_set = slot[None, :] < count[:, None]
    gidx = by_pid[np.minimum(start[:, None] + slot[None, :], num_g - 1)]  # same-pid gallery entries
    dist = distmat[rows[:, None], gidx]
    same_cam = g_camids[gidx] == q_cam[:, None]
    true = in_set & ~same_cam
    excluded = in_set & same_cam

    # Entries anywhere in the gallery that precede each candidate in the stable order: strictly closer,
    # plus equally close with a smaller gallery index.
    closer, at_most = _count_closer(distmat, rows, dist, true)
    tied = at_most - closer - 1
    before = closer + _count_equal_earlier(distmat, rows, dist, gidx, true & (tied > 0))

    # Minus the excluded same-camera entries among them (they are within the same-pid set).
    d_i, d_j = dist[:, :, None], dist[:, None, :]
    precedes = (d_j < d_i) | ((d_j == d_i) & (gidx[:, None, :] < gidx[:, :, None]))
    before -= (precedes & excluded[:, None, :]).sum(axis=2)

    ranks = np.where(true, before + 1, num_g + 1)
    ranks.sort(axis=1)
    return ranks, true.sum(axis=1)


def _count_closer(distmat, rows, dist, true) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate (query row i, distance dist[i, m]): how many entries of the gallery row are strictly
    closer, and how many are at most as far (itself included). Only the true candidates' counts matter.

    Only entries no farther than a row's deepest true match can be counted, and with a useful model they
    are few (a few hundred of 16k): those are packed to the left of a block, sorted and binary-searched.
    Rows are grouped by how many they have (in powers of two), so that one deep row does not widen the
    padding of all the others.
    """
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        block = distmat[rows[0] : rows[-1] + 1]  # consecutive rows: a view, no copy
    else:
        block = distmat[rows]
    deepest = np.where(true, dist, dist.min(axis=1, keepdims=True)).max(axis=1, keepdims=True)
    near = block <= deepest
    if np.count_nonzero(near) > near.size // 4:
        # A weak model: most entries must be sorted anyway, and whole rows sort faster than packed ones.
        full = np.sort(block, axis=1)
        return _count_sorted_below(full, dist, inclusive=False), _count_sorted_below(
            full, dist, inclusive=True
        )
    # flatnonzero on the raveled mask: several times faster than a 2-D nonzero. Entries come out row-major.
    near_r, near_c = np.divmod(np.flatnonzero(near), block.shape[1])
    width = np.bincount(near_r, minlength=len(rows))
    near_pos = np.arange(len(near_r)) - np.repeat(np.cumsum(width) - width, width)  # place within its row
    level = np.ceil(np.log2(width + 1.0)).astype(np.uint8)  # <= 64 levels; uint8 sorts by radix
    by_level = np.argsort(level[near_r], kind="stable")  # entries of one level together, rows in order
    bounds = np.searchsorted(level[near_r][by_level], np.arange(level.max() + 2))
    slot_in_group = np.zeros(len(rows), np.int64)
    fill = np.inf if np.issubdtype(block.dtype, np.floating) else np.iinfo(block.dtype).max
    closer = np.zeros(dist.shape, np.int64)
    at_most = np.zeros(dist.shape, np.int64)
    for group_level in np.unique(level):
        sel = np.flatnonzero(level == group_level)
        slot_in_group[sel] = np.arange(len(sel))
        entries = by_level[bounds[group_level] : bounds[group_level + 1]]
        packed = np.full((len(sel), max(int(width[sel].max()), 1)), fill, dtype=block.dtype)
        packed[slot_in_group[near_r[entries]], near_pos[entries]] = block[near_r[entries], near_c[entries]]
        packed.sort(axis=1)
        values = dist[sel]
        closer[sel] = _count_sorted_below(packed, values, inclusive=False)
        # Padding (the dtype's largest value) may tie a value: never count past the row's real entries.
        at_most[sel] = np.minimum(_count_sorted_below(packed, values, inclusive=True), width[sel][:, None])
    return closer, at_most


def _count_sorted_below(sorted_rows: np.ndarray, values: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """Row-wise np.searchsorted: for each values[i, m], how many of sorted_rows[i] are < (or <=) it.

    A binary search run on all (row, value) pairs at once: bit_length(n) vectorised steps, no Python loop
    over rows.
    """
    n = sorted_rows.shape[1]
    lo = np.zeros(values.shape, np.int64)
    hi = np.full(values.shape, n, np.int64)
    rows = np.arange(sorted_rows.shape[0])[:, None]
    for _ in range(int(n).bit_length()):
        active = lo < hi
        mid = (lo + hi) >> 1
        probe = sorted_rows[rows, np.minimum(mid, n - 1)]
        right = active & ((probe <= values) if inclusive else (probe < values))
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    return lo


def _count_equal_earlier(distmat, rows, dist, gidx, wanted) -> np.ndarray:
    """For the (row, candidate) pairs in `wanted`: gallery entries at exactly the same distance and a smaller
    index (zero elsewhere). Ties are rare with real features, but a collapsed model ties everything, so
    pairs sharing a (row, distance) share one pass over the row: a running count of equal entries."""
    out = np.zeros(dist.shape, np.int64)
    pair_row, pair_col = np.nonzero(wanted)
    if not len(pair_row):
        return out
    values = dist[pair_row, pair_col]
    order = np.lexsort((values, pair_row))
    pair_row, pair_col, values = pair_row[order], pair_col[order], values[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (pair_row[1:] != pair_row[:-1]) | (values[1:] != values[:-1])
    group = np.cumsum(new_group) - 1
    heads = np.flatnonzero(new_group)
    num_g = distmat.shape[1]
    batch = max(1, _CHUNK_BUDGET_BYTES // (num_g * (distmat.itemsize + 5)))
    for lo in range(0, len(heads), batch):
        head = heads[lo : lo + batch]
        running = np.cumsum(distmat[rows[pair_row[head]]] == values[head][:, None], axis=1, dtype=np.int32)
        members = np.flatnonzero((group >= lo) & (group < lo + len(head)))
        r, c = pair_row[members], pair_col[members]
        # Equal entries up to and including the candidate itself, minus itself.
        out[r, c] = running[group[members] - lo, gidx[r, c]] - 1
    return out


# --------------------------------------------------------------------------------------------------------
# k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding",
# CVPR 2017). Same steps and constants as the authors' reference code; the per-sample neighbour tests are
# vectorised. Memory is O(N^2) float32 for N = queries + gallery (Market: ~1.5 GB), so it is optional.
# --------------------------------------------------------------------------------------------------------


def re_rank(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_: float = 0.3) -> np.ndarray:
    """Re-ranked query x gallery distances from the query-gallery, query-query and gallery-gallery ones.

    The result mixes the Jaccard distance of k-reciprocal neighbour sets (weight 1 - lambda_) with the
    original distance (squared, row-normalised as in the paper's code; weight lambda_). Ties in the
    neighbour ranking are broken by index (stable argsort) so the output is deterministic.
    """
    q_g, q_q, g_g = (np.asarray(a, dtype=np.float32) for a in (q_g, q_q, g_g))
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(f"shapes do not fit: q_g {q_g.shape}, q_q {q_q.shape}, g_g {g_g.shape}")
    if not (isinstance(k1, int) and k1 >= 1 and isinstance(k2, int) and k2 >= 1):
        raise ValueError(f"k1 and k2 must be positive integers, got k1={k1!r}, k2={k2!r}")
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must lie in [0, 1], got {lambda_!r}")
    num_all = num_q + num_g

    original = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    col_max = original.max(axis=0)
    original = np.transpose(original / np.where(col_max > 0, col_max, 1.0))
    initial_rank = np.argsort(original, axis=1, kind="stable")

    forward, reciprocal = _k_reciprocal(initial_rank, k1)
    half = int(np.around(k1 / 2.0))
    forward_half, reciprocal_half = _k_reciprocal(initial_rank, half)

    V = np.zeros((num_all, num_all), dtype=np.float32)
    in_set = np.zeros(num_all, dtype=bool)
    for i in range(num_all):
        core = forward[i][reciprocal[i]]  # the k-reciprocal neighbours of i
        in_set[core] = True
        cand_sets, cand_mask = forward_half[core], reciprocal_half[core]
        # Expand by a candidate's own k/2-reciprocal set when over 2/3 of it already lies in the core set.
        overlap = (in_set[cand_sets] & cand_mask).sum(axis=1)
        accept = overlap > 2.0 / 3.0 * cand_mask.sum(axis=1)
        in_set[core] = False
        expansion = np.unique(np.concatenate([core, cand_sets[accept][cand_mask[accept]]]))
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = weight / np.sum(weight)

    original = original[:num_q]
    if k2 != 1:  # local query expansion: average the encodings of each sample's k2 nearest neighbours
        expanded = np.empty_like(V)
        step = max(1, _CHUNK_BUDGET_BYTES // (4 * k2 * num_all))
        for lo in range(0, num_all, step):
            expanded[lo : lo + step] = V[initial_rank[lo : lo + step, :k2]].mean(axis=1)
        V = expanded
    del initial_rank

    jaccard = np.zeros((num_q, num_all), dtype=np.float32)
    for i in range(num_q):
        nonzero = np.flatnonzero(V[i])
        shared = np.minimum(V[:, nonzero], V[i, nonzero][None, :]).sum(axis=1)
        jaccard[i] = 1 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_) + original * lambda_
    return final[:, num_q:]


def _k_reciprocal(initial_rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(forward (N, k+1), reciprocal (N, k+1)): each sample's k+1 nearest, and which of them have it among
    their own k+1 nearest."""
    forward = initial_rank[:, : k + 1]
    backward = initial_rank[forward, : k + 1]  # (N, k+1, k+1)
    reciprocal = (backward == np.arange(len(initial_rank))[:, None, None]).any(axis=2)
    return forward, reciprocal


def chance_rank1(q_pids, g_pids, q_camids, g_camids) -> float:
    """Rank-1 of a random ranking under the same protocol: the baseline a trained model must beat.

    For each valid query, the chance that a uniformly random gallery entry (after the same-pid,
    same-camera exclusion) is a true match; averaged over the valid queries, like rank-1 itself."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    same_pid = q_pids[:, None] == g_pids[None, :]
    kept = ~(same_pid & (q_camids[:, None] == g_camids[None, :]))
    matches = (same_pid & kept).sum(axis=1)
    valid = matches > 0
    if not valid.any():
        return 0.0
    return float(np.mean(matches[valid] / kept.sum(axis=1)[valid]))
