"""Benchmark: `evaluate_ranking` at Market-1501 scale against the per-query loop of popular Re-ID toolkits.

    .venv/bin/python benchmarks/bench_metrics.py [--queries 3368 --gallery 15913 --repeats 3]

Same inputs for every contender: a float32 cosine distance matrix of clustered features shaped like the
Market-1501 test set (751 identities seen by 6 cameras, 2,793 distractors of pid 0). Baselines, measured in
the same run:
- reference loop, stable argsort: tests.helpers.metrics_reference (fast-reid's eval_market1501 loop with the tie
  rule dppp uses): the exact same numbers are required;
- toolkit default: the same loop with numpy's default quicksort argsort, as torchreid / fast-reid run it.
Also k-reciprocal re-ranking against the authors' loop, on a smaller set (its memory is O(N^2)).
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402

from dppp.trainer.evaluation.metrics import evaluate_ranking, re_rank  # noqa: E402
from tests.helpers.metrics_reference import reference_eval_market1501, reference_re_ranking  # noqa: E402


def clustered_features(pids: np.ndarray, rng: np.random.Generator, num_ids: int = 751, dim: int = 64):
    """Unit features: one random centre per identity plus noise; pid 0 (distractors) is pure noise."""
    centers = np.random.default_rng(12345).normal(size=(num_ids + 1, dim)).astype(np.float32)
    f = centers[pids] + rng.normal(scale=1.2, size=(len(pids), dim)).astype(np.float32)
    f[pids == 0] = rng.normal(size=(int((pids == 0).sum()), dim))
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def market_like(num_q: int, num_g: int, seed: int = 0):
    """Cosine distances and labels shaped like Market-1501's test split."""
    rng = np.random.default_rng(seed)
    num_ids, num_cams = 751, 6
    num_distractors = min(2793, num_g // 6)
    g_pids = np.concatenate(
        [np.zeros(num_distractors, np.int64), rng.integers(1, num_ids + 1, num_g - num_distractors)]
    )
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_cams, q_cams = rng.integers(1, num_cams + 1, num_g), rng.integers(1, num_cams + 1, num_q)
    distmat = (1.0 - clustered_features(q_pids, rng) @ clustered_features(g_pids, rng).T).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def compare(title: str, distmat: np.ndarray, labels, repeats: int) -> None:
    print(f"- {title}")
    fast, t_fast, c_fast = timed(lambda: evaluate_ranking(distmat, *labels), repeats)
    tracemalloc.start()
    evaluate_ranking(distmat, *labels)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    (cmc, mAP, mINP, num_valid), t_ref, c_ref = timed(
        lambda: reference_eval_market1501(distmat, *labels, 50, "stable")
    )
    (cmc_qs, mAP_qs, _, _), t_qs, c_qs = timed(
        lambda: reference_eval_market1501(distmat, *labels, 50, "quicksort")
    )

    same = (
        np.array_equal(fast.cmc, cmc)
        and fast.num_valid == num_valid
        and abs(fast.mAP - mAP) < 1e-12
        and abs(fast.mINP - mINP) < 1e-12
    )
    print(f"  {'':34s} {'wall s':>8s} {'CPU s':>8s} {'x wall':>7s} {'x CPU':>7s}")
    print(f"  {'vectorised evaluate_ranking':34s} {t_fast:8.3f} {c_fast:8.3f}   (median of {repeats})")
    for label, wall, cpu in (
        ("reference loop, stable argsort", t_ref, c_ref),
        ("toolkit loop, quicksort argsort", t_qs, c_qs),
    ):
        print(f"  {label:34s} {wall:8.3f} {cpu:8.3f} {wall / t_fast:6.1f}x {cpu / c_fast:6.1f}x")
    print(f"  peak working memory of evaluate_ranking: {peak / 2**20:.0f} MiB (besides the input)")
    print(f"  rank-1 {fast.rank(1):.4f}  mAP {fast.mAP:.4f}  mINP {fast.mINP:.4f}  valid {fast.num_valid}")
    print(
        f"  same numbers as the reference: {same} (|dmAP| {abs(fast.mAP - mAP):.1e}, "
        f"|dmINP| {abs(fast.mINP - mINP):.1e}); toolkit loop mAP differs by {abs(mAP_qs - mAP):.1e}"
    )
    if not same:
        raise SystemExit("MISMATCH with the reference loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rerank-queries", type=int, default=200)
    parser.add_argument("--rerank-gallery", type=int, default=1000)
    args = parser.parse_args()

    distmat, q_pids, g_pids, q_cams, g_cams = market_like(args.queries, args.gallery)
    print(
        f"evaluate_ranking: {args.queries} queries x {args.gallery} gallery, float32 distances "
        f"({distmat.nbytes / 2**20:.0f} MiB)"
    )
    compare(
        "model-like distances (clustered features)", distmat, (q_pids, g_pids, q_cams, g_cams), args.repeats
    )
    noise = np.random.default_rng(2).random(distmat.shape, dtype=np.float32)
    compare(
        "uninformative distances (uniform noise, worst case)",
        noise,
        (q_pids, g_pids, q_cams, g_cams),
        args.repeats,
    )

    nq, ng = args.rerank_queries, args.rerank_gallery
    rng = np.random.default_rng(1)
    feats = clustered_features(rng.integers(1, 200, nq + ng), rng)  # ~6 images per identity
    d = np.clip(1.0 - feats @ feats.T, 0.0, None)  # symmetric, as re-ranking expects
    q_g, q_q, g_g = d[:nq, nq:], d[:nq, :nq], d[nq:, nq:]
    ours, t_rr, c_rr = timed(lambda: re_rank(q_g, q_q, g_g))
    theirs, t_rr_ref, c_rr_ref = timed(lambda: reference_re_ranking(q_g, q_q, g_g))
    print(f"re_rank (k1=20, k2=6, lambda=0.3): {nq} queries x {ng} gallery")
    print(f"  {'vectorised re_rank':34s} {t_rr:8.3f} {c_rr:8.3f}")
    print(
        f"  {'authors loop':34s} {t_rr_ref:8.3f} {c_rr_ref:8.3f} {t_rr_ref / t_rr:6.1f}x "
        f"{c_rr_ref / c_rr:6.1f}x   max |difference| {np.abs(ours - theirs).max():.1e}"
    )


if __name__ == "__main__":
    main()
