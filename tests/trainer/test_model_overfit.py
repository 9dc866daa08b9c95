"""Each method overfits one tiny procedural batch: its losses fall far and retrieval becomes perfect.

The tiny CLIP is random, so in phase 1 (encoders frozen) the image features barely separate identities:
phase 1 is checked on what its trainable modules can fit (alignment, style, decorrelation, prompts), and
retrieval is checked after phase 2, when the image encoder trains.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dppp.trainer.methods.model import build_model
from tests.helpers.toy_batch import STYLE_VOCAB, toy_batch, toy_model_config

IDENTITIES, VIEWS = 4, 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch():
    return toy_batch(IDENTITIES, VIEWS)


def fit(model, batch, steps: int, lr: float) -> list[dict[str, float]]:
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=lr)
    history = []
    for _ in range(steps):
        total, parts = model.loss(batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({"total": total.item(), **{k: v.item() for k, v in parts.items()}})
    return history


def leave_one_out_retrieval(model, batch) -> tuple[float, float]:
    """(rank-1, mAP) of every image against the rest of the batch."""
    embeddings = model.encode_images(batch["pixel_values"])
    pids = batch["pids"]
    similarity = embeddings @ embeddings.t()
    rank1, average_precision = [], []
    for i in range(len(pids)):
        order = [j for j in similarity[i].argsort(descending=True).tolist() if j != i]
        hits = (pids[order] == pids[i]).float()
        rank1.append(hits[0].item())
        precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
        average_precision.append(((precision * hits).sum() / hits.sum()).item())
    return sum(rank1) / len(rank1), sum(average_precision) / len(average_precision)


def config(method):
    # No label smoothing here: its floor H(q) > 0 would hide how far the ID loss can fall.
    return toy_model_config(method, label_smoothing=0.0)


def assert_phase2_overfits(model, batch):
    torch.manual_seed(0)
    rank1_before, _ = leave_one_out_retrieval(model, batch)
    history = fit(model, batch, steps=100, lr=1e-3)
    assert history[-1]["total"] < history[0]["total"] / 10, (history[0], history[-1])
    assert rank1_before < 1.0  # the random encoder did not already solve it
    assert leave_one_out_retrieval(model, batch) == (1.0, 1.0)


@pytest.mark.slow
def test_bot_overfits(batch):
    model = build_model(config("bot"), IDENTITIES).train()
    assert_phase2_overfits(model, batch)


@pytest.mark.slow
def test_clipreid_overfits(batch):
    model = build_model(config("clipreid"), IDENTITIES).train()
    history = fit(model, batch, steps=150, lr=1e-2)
    # Identical prompts for the K images of an identity bound the loss below by log K.
    floor = torch.log(torch.tensor(float(VIEWS))).item()
    assert history[-1]["prompt"] - floor < (history[0]["prompt"] - floor) / 5, (history[0], history[-1])
    model.set_phase(2)  # builds the identity bank from the learned prompts
    with torch.no_grad():
        image = F.normalize(model.backbone.encode_image(batch["pixel_values"]), dim=-1)
    assert torch.equal((image @ model.identity_text.t()).argmax(1), batch["pids"])
    assert_phase2_overfits(model, batch)


@pytest.mark.slow
def test_pdm_overfits(batch):
    model = build_model(config("pdm"), IDENTITIES, STYLE_VOCAB).train()
    history = fit(model, batch, steps=150, lr=1e-2)
    first, last = history[0], history[-1]
    assert last["total"] < first["total"] / 3, (first, last)
    assert last["align"] < first["align"] / 5
    assert last["style"] < first["style"] / 5 and last["decorrelation"] < 0.02
    model.set_phase(2)
    model.build_identity_bank([batch])
    assert bool(model.identity_known.all())
    assert_phase2_overfits(model, batch)
