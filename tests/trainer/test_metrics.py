"""Market-1501 protocol metrics: hand-computed cases, and agreement with the per-query reference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dppp.foundation.errors import DataError
from dppp.trainer.evaluation.metrics import _count_sorted_below, evaluate_ranking, re_rank
from tests.helpers.metrics_reference import reference_eval_market1501, reference_re_ranking


def one_query(dists, g_pids, g_camids, q_pid=1, q_camid=1, max_rank=5):
    return evaluate_ranking(np.array([dists], dtype=float), [q_pid], g_pids, [q_camid], g_camids, max_rank)


def test_same_camera_entry_is_ignored_and_several_true_matches_average():
    # Ranking by distance: g0 (pid 1, same camera: ignored), g1 wrong, g2 hit, g3 wrong, g4 hit.
    # Kept ranking: wrong, HIT(rank 2), wrong, HIT(rank 4).
    result = one_query([0.1, 0.2, 0.3, 0.4, 0.5], g_pids=[1, 2, 1, 3, 1], g_camids=[1, 2, 2, 1, 3])
    np.testing.assert_array_equal(result.cmc, [0, 1, 1, 1, 1])
    assert result.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result.mINP == pytest.approx(2 / 4)  # two true matches, the hardest at rank 4
    assert (result.num_valid, result.num_skipped) == (1, 0)


def test_the_same_pid_on_another_camera_of_the_query_counts():
    # Same pid, same camera: ignored even when nearest; same pid, other camera: a hit at rank 1.
    result = one_query([0.0, 0.1], g_pids=[1, 1], g_camids=[1, 2])
    assert result.cmc[0] == 1.0 and result.mAP == 1.0 and result.mINP == 1.0


def test_queries_without_a_valid_match_are_skipped_and_counted():
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.3, 0.1, 0.2]])
    # q0: pid 1 seen only by its own camera; q1: pid 9 absent; q2: pid 2, hit at rank 2 (after g1 wrong).
    result = evaluate_ranking(distmat, [1, 9, 2], [1, 3, 2], [1, 1, 1], [1, 2, 2], max_rank=3)
    assert (result.num_valid, result.num_skipped) == (1, 2)
    np.testing.assert_array_equal(result.cmc, [0, 1, 1])
    assert result.mAP == pytest.approx(0.5) and result.mINP == pytest.approx(0.5)


def test_averages_over_valid_queries_only():
    distmat = np.array([[0.1, 0.2, 0.3], [0.9, 0.2, 0.1]])
    # q0 (pid 1, cam 1): g0 wrong, g1 hit -> rank 2, AP 1/2. q1 (pid 2, cam 1): g2 hit -> rank 1, AP 1.
    result = evaluate_ranking(distmat, [1, 2], [5, 1, 2], [1, 1], [2, 2, 2], max_rank=2)
    np.testing.assert_array_equal(result.cmc, [0.5, 1.0])
    assert result.mAP == pytest.approx(0.75) and result.mINP == pytest.approx(0.75)
    assert result.summary() == {"rank1": 0.5, "mAP": 0.75, "mINP": 0.75, "num_valid": 2, "num_skipped": 0}


def test_max_rank_longer_than_the_gallery_holds_the_last_value():
    result = one_query([0.3, 0.1, 0.2], g_pids=[1, 2, 3], g_camids=[2, 2, 2], max_rank=10)
    assert result.cmc.shape == (10,)
    np.testing.assert_array_equal(result.cmc, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    assert result.rank(10) == 1.0


def test_ties_are_broken_by_gallery_index():
    # Equal distances: the lower gallery index ranks first, as a stable argsort orders them.
    late = one_query([0.5, 0.5], g_pids=[2, 1], g_camids=[2, 2])
    early = one_query([0.5, 0.5], g_pids=[1, 2], g_camids=[2, 2])
    assert late.mAP == pytest.approx(0.5) and early.mAP == 1.0
    # A collapsed model: every distance equal, ranking by index alone.
    flat = one_query([0.0] * 6, g_pids=[2, 1, 1, 3, 1, 2], g_camids=[2, 1, 2, 2, 2, 2])
    # Kept (g1 same camera dropped): g0 wrong, g2 HIT(2), g3 wrong, g4 HIT(4), g5 wrong.
    assert flat.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_empty_and_degenerate_inputs():
    none = evaluate_ranking(np.zeros((2, 0)), [1, 2], [], [1, 1], [], max_rank=3)
    assert (none.num_valid, none.num_skipped, none.mAP) == (0, 2, 0.0)
    np.testing.assert_array_equal(none.cmc, [0, 0, 0])
    assert evaluate_ranking(np.zeros((0, 3)), [], [1, 2, 3], [], [1, 1, 1]).num_valid == 0


def assert_same_as_reference(got, reference) -> None:
    """evaluate_ranking's result equals the reference loop's (cmc, mAP, mINP, num_valid): CMC and the valid
    count exactly, the averages to float rounding."""
    cmc, mAP, mINP, num_valid = reference
    assert got.num_valid == num_valid
    np.testing.assert_array_equal(got.cmc, cmc)
    assert got.mAP == pytest.approx(mAP, abs=1e-12) and got.mINP == pytest.approx(mINP, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_the_reference_loop_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        num_q, num_g = int(rng.integers(1, 40)), int(rng.integers(1, 90))
        num_pids, num_cams = int(rng.integers(1, 10)), int(rng.integers(1, 5))
        q_pids, g_pids = rng.integers(0, num_pids, num_q), rng.integers(0, num_pids, num_g)
        q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
        # Uninformative or model-like distances (true matches mostly near the top, which takes the packed
        # path of evaluate_ranking), each either continuous or on a coarse grid where ties are everywhere.
        mismatch = q_pids[:, None] != g_pids[None, :]
        distmat = rng.random((num_q, num_g)) + (rng.random() < 0.5) * 2.0 * mismatch * rng.random(
            (num_q, num_g)
        )
        if rng.random() < 0.5:
            distmat = np.floor(distmat * 2).astype(np.float32)
        max_rank = int(rng.integers(1, 100))
        reference = reference_eval_market1501(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
        got = evaluate_ranking(
            distmat, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size=int(rng.integers(1, 8))
        )
        assert_same_as_reference(got, reference)
        assert got.num_skipped == num_q - got.num_valid


def test_integer_and_infinite_distances_agree_with_the_reference_loop():
    rng = np.random.default_rng(11)
    for _ in range(30):
        num_q, num_g = int(rng.integers(1, 20)), int(rng.integers(1, 50))
        labels = (
            rng.integers(0, 5, num_q),
            rng.integers(0, 5, num_g),
            rng.integers(0, 3, num_q),
            rng.integers(0, 3, num_g),
        )
        ints = rng.integers(-3, 3, (num_q, num_g))
        floats = np.where(rng.random((num_q, num_g)) < 0.3, np.inf, rng.random((num_q, num_g)))
        for distmat in (ints, ints.astype(np.int16), floats):
            reference = reference_eval_market1501(distmat, *labels, max_rank=60)
            got = evaluate_ranking(distmat, *labels, max_rank=60, chunk_size=int(rng.integers(1, 5)))
            assert_same_as_reference(got, reference)


def test_default_chunking_torch_input_and_input_is_not_modified():
    rng = np.random.default_rng(7)
    distmat = rng.random((300, 500)).astype(np.float32)
    args = (
        rng.integers(0, 50, 300),
        rng.integers(0, 50, 500),
        rng.integers(0, 6, 300),
        rng.integers(0, 6, 500),
    )
    before = distmat.copy()
    from_numpy = evaluate_ranking(distmat, *args)
    from_torch = evaluate_ranking(torch.from_numpy(distmat), *args)
    np.testing.assert_array_equal(distmat, before)
    np.testing.assert_array_equal(from_numpy.cmc, from_torch.cmc)
    assert (from_numpy.mAP, from_numpy.mINP) == (from_torch.mAP, from_torch.mINP)
    cmc, mAP, _, _ = reference_eval_market1501(distmat, *args)
    np.testing.assert_array_equal(from_numpy.cmc, cmc)
    assert from_numpy.mAP == pytest.approx(mAP, abs=1e-12)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="g_pids has 2 entries"):
        evaluate_ranking(np.zeros((1, 3)), [1], [1, 2], [1], [1, 1, 1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_ranking(np.zeros(3), [1], [1, 2, 3], [1], [1, 1, 1])
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_ranking(np.zeros((1, 1)), [1], [1], [1], [2], max_rank=0)
    with pytest.raises(DataError, match="NaN"):
        evaluate_ranking(np.array([[0.1, np.nan]]), [1], [1, 2], [1], [2, 2])


def test_batched_binary_search_matches_searchsorted():
    rng = np.random.default_rng(3)
    rows = np.sort(rng.integers(0, 10, (6, 33)), axis=1)
    values = rng.integers(-2, 13, (6, 9))
    for inclusive, side in ((False, "left"), (True, "right")):
        expected = np.stack([np.searchsorted(rows[i], values[i], side) for i in range(6)])
        np.testing.assert_array_equal(_count_sorted_below(rows, values, inclusive=inclusive), expected)


# ---- k-reciprocal re-ranking ------------------------------------------------------------------------


def euclidean(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def clustered(seed, spread, num_pids=10, per_pid=8):
    """Identity clusters seen by per_pid cameras; each identity's camera-0 image is the query."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_pids, 16))
    feats = np.repeat(centers, per_pid, 0) + rng.normal(size=(num_pids * per_pid, 16)) * spread
    pids, cams = np.repeat(np.arange(num_pids), per_pid), np.tile(np.arange(per_pid), num_pids)
    q, g = cams == 0, cams != 0
    dists = euclidean(feats[q], feats[g]), euclidean(feats[q], feats[q]), euclidean(feats[g], feats[g])
    return dists, (pids[q], pids[g], cams[q], cams[g])


@pytest.mark.parametrize("seed", range(3))
def test_re_rank_agrees_with_the_authors_loop(seed):
    (q_g, q_q, g_g), _ = clustered(seed, spread=0.9, num_pids=6, per_pid=6)
    for k1, k2, lam in ((20, 6, 0.3), (4, 1, 0.0), (3, 2, 1.0)):
        expected = reference_re_ranking(q_g, q_q, g_g, k1, k2, lam)
        np.testing.assert_allclose(re_rank(q_g, q_q, g_g, k1, k2, lam), expected, atol=1e-5)


def test_re_rank_keeps_a_perfect_ranking():
    dists, labels = clustered(0, spread=0.05)
    assert evaluate_ranking(dists[0], *labels).mAP == 1.0
    assert evaluate_ranking(re_rank(*dists, k1=6, k2=3), *labels).mAP == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_re_rank_improves_noisy_clusters(seed):
    dists, labels = clustered(seed, spread=0.9)
    before = evaluate_ranking(dists[0], *labels).mAP
    after = evaluate_ranking(re_rank(*dists, k1=6, k2=3, lambda_=0.3), *labels).mAP
    assert after > before + 0.03


def test_re_rank_rejects_bad_arguments():
    (q_g, q_q, g_g), _ = clustered(0, spread=0.5, num_pids=3, per_pid=3)
    with pytest.raises(ValueError, match="shapes"):
        re_rank(q_g, g_g, q_q)
    with pytest.raises(ValueError, match="lambda_"):
        re_rank(q_g, q_q, g_g, lambda_=1.5)
    with pytest.raises(ValueError, match="k1"):
        re_rank(q_g, q_q, g_g, k1=0)


def test_chance_rank1_is_the_mean_hit_rate_of_a_random_ranking():
    from dppp.trainer.evaluation.metrics import chance_rank1

    # query 0 (pid 1, cam 1): gallery after exclusion = entries 1, 2, 3 (entry 0 is pid 1 cam 1) -> 1 match of 3
    # query 1 (pid 3, cam 1): no true match -> skipped, like evaluate_ranking skips it
    q_pids, q_cams = [1, 3], [1, 1]
    g_pids, g_cams = [1, 1, 2, 2], [1, 2, 1, 2]
    assert chance_rank1(q_pids, g_pids, q_cams, g_cams) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    q, g = rng.integers(0, 5, 40), rng.integers(0, 5, 400)
    qc, gc = rng.integers(0, 3, 40), rng.integers(0, 3, 400)
    trials = [evaluate_ranking(rng.random((40, 400)), q, g, qc, gc, max_rank=1).cmc[0] for _ in range(300)]
    assert np.mean(trials) == pytest.approx(chance_rank1(q, g, qc, gc), abs=0.02)
