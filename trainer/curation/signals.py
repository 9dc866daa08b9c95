"""The curation signals of one shard, from pixels and CLIP features: pure numpy, no model, no I/O.

A shard holds whole identities (every view of a pid), so every signal is computed within one shard:
the other prompts a prompt is ranked against and the other identities a view is compared with are the
shard's. See docs/curation.md for what each score means and how its threshold was set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dppp.trainer.curation.config import SignalThresholds

BLANK, NOISE, PROMPT, IDENTITY, NEAR_DUPLICATE = "blank", "noise", "prompt", "identity", "near_duplicate"
REASONS = (BLANK, NOISE, PROMPT, IDENTITY, NEAR_DUPLICATE)  # the order a sample's reason is chosen in


def pixel_signals(gray: np.ndarray) -> tuple[float, float]:
    """(contrast, structure) of a luminance image [H, W]: its standard deviation (0-255), and the lower
    of the horizontal and vertical correlations of neighbouring pixels (1 for a constant image, whose
    contrast already judges it). A scene has smooth regions and edges: 0.8-1.0; uniform noise: 0."""
    a = gray.astype(np.float64)
    contrast = float(a.std())
    return contrast, min(_neighbour_correlation(a[:, 1:], a[:, :-1]), _neighbour_correlation(a[1:], a[:-1]))


def _neighbour_correlation(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    scale = np.sqrt((u * u).sum() * (v * v).sum())
    return float((u * v).sum() / scale) if scale > 0 else 1.0


def prompt_signals(similarity: np.ndarray, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, margin) per image from cos(image i, prompt j) [n, n] (row i: image i; column i: its prompt).
    rank: the share of other identities' prompts that beat its own; margin: own minus the best of them.
    Both are relative to the shard's prompts, so a model's cosine scale does not matter. NaN when the
    shard holds a single identity."""
    n = len(pids)
    own = similarity[np.arange(n), np.arange(n)]
    others = pids[None, :] != pids[:, None]
    rank = np.full(n, np.nan)
    margin = np.full(n, np.nan)
    for i in range(n):
        rivals = similarity[i, others[i]]
        if rivals.size:
            rank[i] = float((rivals > own[i]).mean())
            margin[i] = float(own[i] - rivals.max())
    return rank, margin


@dataclass
class IdentitySignals:
    consistency: np.ndarray  # cos(view, mean of its identity's other usable views); NaN: no other view
    margin: np.ndarray  # consistency minus the best cos(view, another identity's mean); NaN likewise
    near_duplicate: np.ndarray  # per view: its identity's highest mean-to-mean cosine with another identity
    near_duplicate_pid: np.ndarray  # that other identity's pid, -1 when the shard has no other


def identity_signals(features: np.ndarray, pids: np.ndarray, usable: np.ndarray) -> IdentitySignals:
    """Each view against its identity's other views, from L2-normalised image features [n, d].

    Only `usable` views (not already judged degenerate) make an identity's mean: a black frame must not
    drag the mean of the views it is compared with. A view's own mean leaves the view out."""
    n = len(pids)
    consistency = np.full(n, np.nan)
    margin = np.full(n, np.nan)
    near = np.full(n, np.nan)
    near_pid = np.full(n, -1, dtype=np.int64)
    identities = sorted(set(pids.tolist()))
    sums = {p: features[(pids == p) & usable].sum(0) for p in identities}
    counts = {p: int(((pids == p) & usable).sum()) for p in identities}
    means = {p: _unit(sums[p]) for p in identities if counts[p]}
    for i in range(n):
        pid = int(pids[i])
        own_sum, own_count = sums[pid], counts[pid]
        if usable[i]:
            own_sum, own_count = own_sum - features[i], own_count - 1
        others = [float(features[i] @ means[p]) for p in means if p != pid]
        if own_count > 0:
            consistency[i] = float(features[i] @ _unit(own_sum))
            if others:
                margin[i] = consistency[i] - max(others)
    for pid in means:
        rivals = [(float(means[pid] @ means[p]), p) for p in means if p != pid]
        if rivals:
            best, other = max(rivals)
            near[pids == pid], near_pid[pids == pid] = best, other
    return IdentitySignals(consistency, margin, near, near_pid)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def decide(scores: dict[str, np.ndarray], thresholds: SignalThresholds) -> tuple[np.ndarray, list[str]]:
    """(keep, reason) per sample: the first signal past its threshold names the reason ('' when kept).
    A NaN score (a view without another view to compare with) judges nothing."""
    t = thresholds
    n = len(scores["contrast"])
    tests = [
        (BLANK, scores["contrast"] < t.min_contrast),
        (NOISE, scores["structure"] < t.min_structure),
        (
            PROMPT,
            (scores["prompt_margin"] < t.min_prompt_margin) | (scores["prompt_rank"] > t.max_prompt_rank),
        ),
        (
            IDENTITY,
            (scores["identity_consistency"] < t.min_identity_consistency)
            | (scores["identity_margin"] < t.min_identity_margin),
        ),
    ]
    if t.reject_near_duplicates:
        tests.append((NEAR_DUPLICATE, scores["near_duplicate"] > t.near_duplicate))
    reason = [""] * n
    for name, failed in tests:
        for i in np.flatnonzero(failed):  # NaN compares False: not judged
            if not reason[i]:
                reason[i] = name
    keep = np.array([r == "" for r in reason], dtype=bool)
    return keep, reason
