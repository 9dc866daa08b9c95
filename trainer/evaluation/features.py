"""Feature extraction for evaluation (batched, no grad, optional flip), and query x gallery distances.

    feats = extract_features(model.encode_image, split.query, batch_size=64, flip=True, transform=preprocess)
    distmat = distance_matrix(q_feats, g_feats, metric="cosine")   # then dppp.trainer.evaluation.metrics.evaluate_ranking

`items_or_loader` may be: a (N, C, H, W) tensor; a sequence of image tensors (C, H, W); a sequence of
`ReidItem`s or image paths (opened with PIL as RGB and turned into tensors by `transform`); or an iterable
of batches such as a DataLoader, each batch a (B, C, H, W) tensor, a tuple/list starting with one, or a
dict holding one under "image". Features come back in input order, float32 on the CPU.

Synthetic items live inside tar shards ("<shard>#<key>"), so their images come from the shards:

    images = dppp.trainer.data.readers.synthetic_images(dataset_url, split.query)
    feats = extract_features(model.encode_image, (preprocess(im) for im in images), batch_size=64)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from PIL import Image

from dppp.trainer.data.readers import ReidItem

Encoder = Callable[[torch.Tensor], torch.Tensor]


def extract_features(
    encode_fn: Encoder,
    items_or_loader: Any,
    batch_size: int = 64,
    flip: bool = False,
    *,
    transform: Callable[[Any], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(N, D) features of every image, encoded `batch_size` at a time under torch.inference_mode().

    With `flip`, each image's feature is the mean of the features of the image and of its horizontal
    mirror (the last axis is the width), the usual test-time augmentation of Re-ID toolkits.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outputs = []
    with torch.inference_mode():
        for batch in _batches(items_or_loader, batch_size, transform):
            if device is not None:
                batch = batch.to(device)
            features = _encode(encode_fn, batch)
            if flip:
                features = (features + _encode(encode_fn, torch.flip(batch, dims=[-1]))) / 2
            outputs.append(features.detach().to("cpu", torch.float32))
    if not outputs:
        raise ValueError("no image to extract features from")
    return torch.cat(outputs)


def _encode(encode_fn: Encoder, batch: torch.Tensor) -> torch.Tensor:
    features = encode_fn(batch)
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != batch.shape[0]:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(
            f"encode_fn must map a batch of {batch.shape[0]} images to ({batch.shape[0]}, D) "
            f"features, got {shape}"
        )
    return features


def _batches(source: Any, batch_size: int, transform) -> Iterator[torch.Tensor]:
    """Yield (B, C, H, W) batches in input order: batches pass through, single images are grouped."""
    if isinstance(source, torch.Tensor):
        if source.ndim != 4:
            raise ValueError(f"an image tensor must be (N, C, H, W), got shape {tuple(source.shape)}")
        yield from source.split(batch_size)
        return
    if not isinstance(source, Iterable):
        raise TypeError(f"cannot extract features from a {type(source).__name__}")
    pending: list[torch.Tensor] = []
    for element in source:
        if isinstance(element, dict):
            element = element["image"]
        elif isinstance(element, (tuple, list)):
            element = element[0]
        if isinstance(element, (ReidItem, str, os.PathLike)):
            element = _load(element, transform)
        if not isinstance(element, torch.Tensor) or element.ndim not in (3, 4):
            raise ValueError(f"expected an image (C, H, W) or a batch (B, C, H, W), got {_describe(element)}")
        if element.ndim == 4:
            if pending:
                yield torch.stack(pending)
                pending = []
            yield element
            continue
        pending.append(element)
        if len(pending) == batch_size:
            yield torch.stack(pending)
            pending = []
    if pending:
        yield torch.stack(pending)


def _load(item: ReidItem | str | os.PathLike, transform) -> torch.Tensor:
    path = item.path if isinstance(item, ReidItem) else os.fspath(item)
    if transform is None:
        raise ValueError("images given by path need a transform (PIL image -> (C, H, W) tensor)")
    if "#" in path and not os.path.exists(path):
        # "<shard>#<key>" items of synthetic splits live inside tar shards, not at a path.
        raise ValueError(
            f"{path} is a sample inside a shard: pass the images of dppp.trainer.data.readers."
            "synthetic_images(dataset_url, items) through the transform instead"
        )
    with Image.open(path) as image:
        return transform(image.convert("RGB"))


def _describe(value: Any) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def distance_matrix(
    q: torch.Tensor, g: torch.Tensor, metric: Literal["cosine", "euclidean"] = "cosine"
) -> torch.Tensor:
    """(num_query, num_gallery) float32 distances, smaller = closer.

    cosine: 1 - cos(q, g), in [0, 2] (features are L2-normalised here).
    euclidean: ||q - g||, from the expansion |q|^2 + |g|^2 - 2 q.g computed in float64 so that near-equal
    features do not lose their ordering to cancellation.
    """
    q, g = torch.as_tensor(q), torch.as_tensor(g)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(
            f"features must be (N, D) with the same D, got {tuple(q.shape)} and {tuple(g.shape)}"
        )
    with torch.inference_mode():
        if metric == "cosine":
            qn = torch.nn.functional.normalize(q.float(), dim=1)
            gn = torch.nn.functional.normalize(g.float(), dim=1)
            return (1.0 - qn @ gn.T).clamp_(min=0.0)
        if metric == "euclidean":
            q64, g64 = q.double(), g.double()
            squared = (q64 * q64).sum(1, keepdim=True) + (g64 * g64).sum(1)[None, :] - 2.0 * (q64 @ g64.T)
            return squared.clamp_(min=0.0).sqrt_().float()
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
