"""Batched feature extraction (flip, input kinds) and distance matrices, with trivial encode functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dppp.trainer.data.readers import ReidItem, read_market1501
from dppp.trainer.evaluation.features import distance_matrix, extract_features
from dppp.trainer.evaluation.metrics import evaluate_ranking


def column_means(batch: torch.Tensor) -> torch.Tensor:
    """A trivial encoder: the mean of each image column (W features), so a mirror image is visible."""
    return batch.mean(dim=(1, 2))


class CountingEncoder:
    def __init__(self):
        self.batch_sizes = []
        self.grad_enabled = []

    def __call__(self, batch):
        self.batch_sizes.append(batch.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled())
        return column_means(batch)


def images(n=7, c=3, h=4, w=5, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_batches_in_order_without_grad():
    encoder, x = CountingEncoder(), images()
    feats = extract_features(encoder, x, batch_size=3)
    assert encoder.batch_sizes == [3, 3, 1] and encoder.grad_enabled == [False] * 3
    torch.testing.assert_close(feats, column_means(x))
    assert feats.dtype == torch.float32 and not feats.requires_grad
    # Batches go to the requested device; features come back on the CPU.
    on_device = extract_features(lambda b: column_means(b).double(), x, batch_size=3, device="cpu")
    assert on_device.device.type == "cpu" and on_device.dtype == torch.float32
    torch.testing.assert_close(on_device, column_means(x))


def test_flip_averages_the_image_and_its_mirror():
    x = images()
    feats = extract_features(column_means, x, batch_size=4, flip=True)
    expected = (column_means(x) + column_means(x).flip(dims=[1])) / 2
    torch.testing.assert_close(feats, expected)
    # A mirror-symmetric summary: flipping changes nothing.
    symmetric = extract_features(lambda b: b.mean(dim=(2, 3)), x, batch_size=4, flip=True)
    torch.testing.assert_close(symmetric, x.mean(dim=(2, 3)))


def test_every_input_kind_gives_the_same_features():
    x = images(n=5)
    expected = column_means(x)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(5)), batch_size=2)
    as_dicts = [{"image": img, "pid": 1} for img in x]
    mixed = [x[0], x[1:3], x[3], x[4]]  # single images and a ready batch, order kept
    for source in (list(x), loader, as_dicts, mixed):
        torch.testing.assert_close(extract_features(column_means, source, batch_size=2), expected)


def test_items_from_a_reader_are_loaded_with_the_transform(tmp_path):
    root = tmp_path / "market"
    colours = {"0001_c1s1_000001_00.jpg": (250, 0, 0), "0002_c2s1_000001_00.jpg": (0, 0, 250)}
    for sub, names in (
        ("query", list(colours)),
        ("bounding_box_test", ["0001_c2s1_000002_00.jpg", "0002_c1s1_000002_00.jpg"]),
        ("bounding_box_train", ["0003_c1s1_000001_00.jpg"]),
    ):
        (root / sub).mkdir(parents=True)
        for name in names:
            colour = colours.get(name, (250, 0, 0) if name.startswith("0001") else (0, 0, 250))
            Image.new("RGB", (8, 16), colour).save(root / sub / name)
    split = read_market1501(root)

    def to_tensor(image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def mean_colour(batch):
        return batch.mean(dim=(2, 3))

    q = extract_features(mean_colour, split.query, batch_size=8, transform=to_tensor)
    g = extract_features(mean_colour, split.gallery, batch_size=1, transform=to_tensor)
    result = evaluate_ranking(
        distance_matrix(q, g),
        [i.pid for i in split.query],
        [i.pid for i in split.gallery],
        [i.camid for i in split.query],
        [i.camid for i in split.gallery],
    )
    assert result.mAP == 1.0 and result.num_valid == 2
    with pytest.raises(ValueError, match="need a transform"):
        extract_features(mean_colour, split.query)
    with pytest.raises(
        ValueError, match="inside a shard: pass the images of dppp.trainer.data.readers.synthetic_images"
    ):
        extract_features(
            mean_colour, [ReidItem("shards/shard-000000.tar#p000001_v000", 1, 1)], transform=to_tensor
        )


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"\(3, D\) features, got \(3,\)"):
        extract_features(lambda b: b.sum(dim=(1, 2, 3)), images(n=3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extract_features(column_means, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no image"):
        extract_features(column_means, [])
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(column_means, images(), batch_size=0)
    with pytest.raises(ValueError, match="expected an image"):
        extract_features(column_means, [torch.zeros(5)])


def test_cosine_and_euclidean_distances():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    cos = distance_matrix(q, g, "cosine")
    torch.testing.assert_close(cos, torch.tensor([[0.0, 1 - 2**-0.5, 1.0], [1.0, 1 - 2**-0.5, 2.0]]))
    euc = distance_matrix(q, g, "euclidean")
    torch.testing.assert_close(euc, torch.cdist(q.double(), g.double()).float())
    assert distance_matrix(q, g).dtype == torch.float32
    # Near-identical features keep their order (no cancellation to zero).
    base = torch.full((1, 64), 1000.0)
    near = torch.cat([base + 1e-3, base + 2e-3])
    d = distance_matrix(base, near, "euclidean")
    assert 0 < d[0, 0] < d[0, 1]
    with pytest.raises(ValueError, match="metric"):
        distance_matrix(q, g, "manhattan")
    with pytest.raises(ValueError, match="same D"):
        distance_matrix(q, torch.zeros(2, 3))
