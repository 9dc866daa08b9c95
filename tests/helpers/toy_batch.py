"""Procedural Re-ID batches for tests and benchmarks: per-identity colour patterns under per-view styles.

Each identity is an upper-body colour, a lower-body colour and a stripe frequency; each view changes the
style only: an illumination gain, a weather colour cast and a camera's sensor noise. So identity is
recoverable from every view, and the style attributes are real labels a style head can learn.
"""

from __future__ import annotations

import numpy as np
import torch

# CLIP's pixel normalisation, as the data pipeline applies it.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

ILLUMINATION_GAINS = (1.0, 0.55)
WEATHER_CASTS = ((0.0, 0.0, 0.0), (0.08, 0.08, 0.12))
STYLE_VOCAB = {"illumination": len(ILLUMINATION_GAINS), "weather": len(WEATHER_CASTS), "camid": 4}


def toy_batch(identities: int, views: int, size: tuple[int, int] = (64, 32), seed: int = 0) -> dict:
    """{"pixel_values": [P*K, 3, H, W], "pids": [P*K], "style": {attr: [P*K]}}, identities contiguous."""
    rng = np.random.default_rng(seed)
    height, width = size
    images, pids, style = [], [], {name: [] for name in STYLE_VOCAB}
    for pid in range(identities):
        upper, lower = rng.uniform(0.1, 0.9, size=(2, 3)).astype(np.float32)
        stripes = 2 + pid % 4
        for view in range(views):
            illumination = (view + pid) % len(ILLUMINATION_GAINS)
            weather = (view // 2 + pid) % len(WEATHER_CASTS)
            camid = view % STYLE_VOCAB["camid"]
            image = np.empty((height, width, 3), dtype=np.float32)
            image[: height // 2] = upper
            image[height // 2 :] = lower
            rows = (np.arange(height) * stripes // height) % 2 == 1
            image[rows, : width // 4] *= 0.5
            image = image * ILLUMINATION_GAINS[illumination] + np.array(
                WEATHER_CASTS[weather], dtype=np.float32
            )
            image += rng.normal(0, 0.02 * (1 + camid), size=image.shape).astype(np.float32)
            image = (np.clip(image, 0, 1) - CLIP_MEAN) / CLIP_STD
            images.append(image.transpose(2, 0, 1))
            pids.append(pid)
            for name, value in (("illumination", illumination), ("weather", weather), ("camid", camid)):
                style[name].append(value)
    return {
        "pixel_values": torch.from_numpy(np.stack(images)),
        "pids": torch.tensor(pids, dtype=torch.long),
        "style": {name: torch.tensor(values, dtype=torch.long) for name, values in style.items()},
    }


def toy_model_config(method: str = "pdm", **overrides):
    """A ModelConfig matching `toy_batch`'s 64x32 images: a tiny CLIP (width 32, patch 8), seconds on CPU."""
    from dppp.trainer.clip.config import TinyClipConfig
    from dppp.trainer.methods.config import ModelConfig

    tiny = TinyClipConfig(hidden_size=32, intermediate_size=64, num_heads=4, patch_size=8, projection_dim=32)
    fields = dict(method=method, tiny=tiny, image_size=(64, 32), inversion_hidden_dim=64)
    return ModelConfig(**{**fields, **overrides})
