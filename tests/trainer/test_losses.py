"""The losses against their textbook definitions, on hand-made tensors."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from dppp.trainer.methods import losses


def normalised(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_matches_clip_formula_and_rewards_alignment():
    a, b = normalised(6, 8, seed=1), normalised(6, 8, seed=2)
    logits = a @ b.t() / 0.1
    manual = -(torch.diag(logits.log_softmax(1)).mean() + torch.diag(logits.log_softmax(0)).mean()) / 2
    assert torch.allclose(losses.info_nce(a, b, 0.1), manual)
    assert losses.info_nce(a, a, 0.01) < 1e-3 < losses.info_nce(a, b, 0.01)


def test_multi_positive_contrastive_reduces_to_info_nce_with_unique_labels():
    a, b = normalised(5, 4, seed=3), normalised(5, 4, seed=4)
    labels = torch.arange(5)
    one_way = F.cross_entropy(a @ b.t() / 0.2, labels)
    assert torch.allclose(losses.multi_positive_contrastive(a, b, labels, labels, 0.2), one_way)


def test_multi_positive_contrastive_averages_over_positives():
    q = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    log_prob = (q @ keys.t() / 0.5).log_softmax(1)[0]
    expected = -(log_prob[0] + log_prob[2]) / 2
    got = losses.multi_positive_contrastive(q, keys, torch.tensor([7]), torch.tensor([7, 1, 7]), 0.5)
    assert torch.allclose(got, expected)
    # A query with no positive is skipped; none at all gives 0.
    assert losses.multi_positive_contrastive(q, keys, torch.tensor([9]), torch.tensor([7, 1, 7]), 0.5) == 0


def test_label_smoothing_matches_szegedy_and_torch():
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    q = torch.full((7, 5), 0.1 / 5)
    q[torch.arange(7), targets] += 0.9
    manual = -(q * logits.log_softmax(1)).sum(1).mean()
    got = losses.label_smoothing_cross_entropy(logits, targets, 0.1)
    assert torch.allclose(got, manual)
    assert torch.allclose(got, F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_batch_hard_triplet_on_points_of_a_line():
    # pid 0 at 0 and 1, pid 1 at 1.5 and 4: hardest pairs by hand.
    x = torch.tensor([[0.0], [1.0], [1.5], [4.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor: (d_ap*, d_an*) = (1, 1.5), (1, 0.5), (2.5, 0.5), (2.5, 3)
    gaps = torch.tensor([1 - 1.5, 1 - 0.5, 2.5 - 0.5, 2.5 - 3])
    assert torch.allclose(losses.batch_hard_triplet(x, y, 0.3), F.relu(gaps + 0.3).mean())
    assert torch.allclose(losses.batch_hard_triplet(x, y, None), F.softplus(gaps).mean())


def test_batch_hard_triplet_skips_anchors_without_positive_and_has_finite_gradients():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]], requires_grad=True)  # duplicate points
    y = torch.tensor([0, 0, 1])  # pid 1 has no positive
    loss = losses.batch_hard_triplet(x, y, 0.3)
    assert torch.isclose(loss, torch.tensor(0.0))  # d_ap = 0, d_an = 5 for the two valid anchors
    loss.backward()
    assert torch.isfinite(x.grad).all()
    single = torch.randn(3, 2, requires_grad=True)
    assert losses.batch_hard_triplet(single, torch.tensor([0, 1, 2]), 0.3) == 0


def test_squared_cosine():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert losses.squared_cosine(a, torch.tensor([[0.0, 2.0], [-1.0, 1.0]])) == 0
    assert math.isclose(losses.squared_cosine(a, -3 * a).item(), 1.0, rel_tol=1e-6)
