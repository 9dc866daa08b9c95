"""THE REFERENCE: the per-query Market-1501 evaluation loop, as popular Re-ID toolkits write it.

This is the oracle that `dppp.trainer.evaluation.metrics.evaluate_ranking` is tested against (tests/trainer/test_metrics*.py) and the
baseline it is timed against (benchmarks/bench_metrics.py). It follows fast-reid's / torchreid's
`eval_market1501` line by line, with the two conventions dppp fixes explicitly:

- ties in distance are broken by gallery index (stable argsort), so the result does not depend on the sort
  algorithm; the toolkits use numpy's default (unstable) quicksort, which only differs when distances tie;
- every query's CMC row is padded to `max_rank` with its last value when the gallery left after the
  same-pid/same-camera exclusion is shorter than `max_rank` (the toolkits instead shrink `max_rank` to the
  gallery size, or fail on ragged rows).

Keep it obvious rather than fast: it is only ever a yardstick.
"""

from __future__ import annotations

import numpy as np


def reference_eval_market1501(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    argsort_kind: str = "stable",
) -> tuple[np.ndarray, float, float, int]:
    """Returns (cmc of length max_rank, mAP, mINP, number of valid queries)."""
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1, kind=argsort_kind)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)

    all_cmc, all_ap, all_inp = [], [], []
    num_valid_q = 0
    for q_idx in range(num_q):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        # Remove gallery samples of the same identity seen by the same camera as the query.
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)

        raw_cmc = matches[q_idx][keep]  # binary vector, 1 where a true match sits in the ranking
        if not np.any(raw_cmc):
            continue  # the query identity does not appear in the gallery (from another camera)

        cmc = raw_cmc.cumsum()
        pos_idx = np.where(raw_cmc == 1)[0]
        max_pos_idx = np.max(pos_idx)
        all_inp.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))

        cmc[cmc > 1] = 1
        row = cmc[:max_rank].astype(np.float64)
        if row.size < max_rank:
            row = np.concatenate([row, np.full(max_rank - row.size, row[-1])])
        all_cmc.append(row)
        num_valid_q += 1

        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum() / (np.arange(raw_cmc.size) + 1.0)
        tmp_cmc = tmp_cmc * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)

    if num_valid_q == 0:
        return np.zeros(max_rank), 0.0, 0.0, 0
    cmc = np.asarray(all_cmc).sum(0) / num_valid_q
    return cmc, float(np.mean(all_ap)), float(np.mean(all_inp)), num_valid_q


def reference_re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking as in the authors' code (Zhong et al., CVPR 2017), loops and all.

    Only changes: a stable argsort (ties broken by index, as `dppp.trainer.evaluation.metrics.re_rank` does) and no division
    by a zero column maximum.
    """
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    col_max = np.max(original_dist, axis=0)
    original_dist = np.transpose(1.0 * original_dist / np.where(col_max > 0, col_max, 1.0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)

    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            half = int(np.around(k1 / 2.0))
            candidate_forward_k_neigh_index = initial_rank[candidate, : half + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, : half + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2.0 / 3 * len(
                candidate_k_reciprocal_index
            ):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)

    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]

    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        ind_non_zero = np.where(V[i, :] != 0)[0]
        ind_images = [inv_index[ind] for ind in ind_non_zero]
        for j in range(len(ind_non_zero)):
            temp_min[0, ind_images[j]] = temp_min[0, ind_images[j]] + np.minimum(
                V[i, ind_non_zero[j]], V[ind_images[j], ind_non_zero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]
