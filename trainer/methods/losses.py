"""The losses of PDM and its baselines, as plain functions of tensors (formulas in docs/method.md).

Contrastive losses take L2-normalised features; similarities are cosines divided by a fixed temperature.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: row i of `a` matches row i of `b` only. a, b: [B, D] normalised."""
    logits = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def multi_positive_contrastive(
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_labels: torch.Tensor,
    key_labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Supervised contrastive loss, one direction (Khosla et al. 2020, 'L_out'; CLIP-ReID's SupConLoss):
    every key with the query's label is a positive, all keys are in the denominator.

        L = -1/B sum_i 1/|P(i)| sum_{p in P(i)} log( exp(q_i.k_p / t) / sum_j exp(q_i.k_j / t) )

    Queries without any positive key are skipped."""
    log_prob = F.log_softmax(queries @ keys.t() / temperature, dim=1)
    positive = (query_labels[:, None] == key_labels[None, :]).to(log_prob.dtype)
    count = positive.sum(dim=1)
    has = count > 0
    if not has.any():
        return log_prob.sum() * 0
    per_query = -(log_prob * positive).sum(dim=1)[has] / count[has]
    return per_query.mean()


def symmetric_supervised_contrastive(
    images: torch.Tensor, texts: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(image->text + text->image) / 2, same label = positive, over the batch."""
    i2t = multi_positive_contrastive(images, texts, labels, labels, temperature)
    t2i = multi_positive_contrastive(texts, images, labels, labels, temperature)
    return (i2t + t2i) / 2


def label_smoothing_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Szegedy et al. 2016: q = (1 - eps) * onehot(y) + eps / K;  L = -sum_k q_k log p_k, batch mean."""
    log_prob = F.log_softmax(logits, dim=1)
    nll = -log_prob.gather(1, targets[:, None]).squeeze(1)
    uniform = -log_prob.mean(dim=1)
    return ((1 - epsilon) * nll + epsilon * uniform).mean()


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [B, B]; clamped before the root so the gradient at d = 0 stays finite."""
    squared = features.pow(2).sum(dim=1)
    d2 = squared[:, None] + squared[None, :] - 2 * features @ features.t()
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float | None) -> torch.Tensor:
    """Hermans et al. 2017: for each anchor, its farthest positive and nearest negative in the batch.

        hard margin:  L = mean_a max(0, d(a, p*) - d(a, n*) + m)
        soft margin:  L = mean_a log(1 + exp(d(a, p*) - d(a, n*)))      (margin=None)

    Anchors lacking a positive (another image of its identity) or a negative are skipped."""
    dist = pairwise_distances(features)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=features.device)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not valid.any():
        return features.sum() * 0
    hardest_positive = dist.masked_fill(~positive, float("-inf")).max(dim=1).values[valid]
    hardest_negative = dist.masked_fill(~negative, float("inf")).min(dim=1).values[valid]
    gap = hardest_positive - hardest_negative
    if margin is None:
        return F.softplus(gap).mean()
    return F.relu(gap + margin).mean()


def squared_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean_i cos(a_i, b_i)^2: 0 when each pair is orthogonal, whatever the sign of their correlation."""
    return F.cosine_similarity(a, b, dim=-1).pow(2).mean()


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def gradient_reversal(x: torch.Tensor) -> torch.Tensor:
    """Identity forward, negated gradient backward (Ganin & Lempitsky 2015): a classifier after it learns to
    predict, while what comes before it learns to make the prediction fail."""
    return _GradientReversal.apply(x)


def norm_deviation(words: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_i ((||w_i|| - m) / m)^2: pseudo-words held to the norm m of the real token embeddings."""
    return ((words.norm(dim=-1) - target) / target).pow(2).mean()
