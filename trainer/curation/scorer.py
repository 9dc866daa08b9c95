"""One shard's curation rows: read its samples, compute every signal, decide, encode the shard's file.

Runs in a curate actor (trainer/curation/job.py) or in-process (tests). The CLIP is loaded once, as
`train.model.backbone` loads it (trainer/clip/backbone.py), at the curation's input size.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F
from transformers.utils import logging as transformers_logging

from dppp.dataset.curation import FORMAT, encode_part, part_name, schema
from dppp.dataset.format import READ_IMAGE_EXTS
from dppp.dataset.records import read_record
from dppp.dataset.shard_reader import image_member, read_shard
from dppp.foundation.errors import DataError
from dppp.trainer.clip.backbone import load_backbone
from dppp.trainer.curation.config import CurateConfig
from dppp.trainer.curation.signals import decide, identity_signals, pixel_signals, prompt_signals
from dppp.trainer.data.transforms import EvalTransform, decode_rgb, normalise_batch
from dppp.trainer.evaluation.zero_shot import text_features
from dppp.trainer.methods.config import ModelConfig

DECIMALS = 4  # scores are rounded before they are judged and stored: thread counts move the 7th digit


class ShardScorer:
    def __init__(self, config: CurateConfig, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        transformers_logging.disable_progress_bar()  # "Loading weights" on every actor's start: noise
        self.config = config
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model = ModelConfig(backbone=config.model, image_size=config.image_size)
        self.backbone = load_backbone(model, []).to(self.device).eval()
        self.clip_s = 0.0  # seconds in the CLIP's forward passes (the rest is reading, decoding, pixels)

    def score(self, samples: list[dict[str, Any]], where: str) -> dict[str, Any]:
        """Columns (name -> list) of `samples` (read with images as bytes, txt, cls), in their order."""
        if not samples:
            raise DataError(f"{where}: a committed shard without samples")
        transform = EvalTransform(self.config.image_size)
        pixels = np.zeros((len(samples), *self.config.image_size, 3), dtype=np.uint8)
        contrast, structure, pids, prompts = [], [], [], []
        for i, sample in enumerate(samples):
            ext = image_member(sample)
            if ext is None or "cls" not in sample:
                raise DataError(f"{where}: sample {sample['__key__']!r} lacks its image or its pid (cls)")
            image = decode_rgb(sample[ext], f"{where}: sample {sample['__key__']!r}")
            c, s = pixel_signals(np.asarray(image.convert("L")))
            contrast.append(c)
            structure.append(s)
            transform.pixels_into(pixels[i], image)
            pids.append(int(sample["cls"]))
            prompts.append(sample.get("txt"))
        pids_array = np.asarray(pids, dtype=np.int64)
        batch = self.config.batch_size
        clip_started = time.perf_counter()
        with torch.no_grad():
            features = torch.cat(
                [
                    F.normalize(
                        self.backbone.encode_image(normalise_batch(pixels[s : s + batch]).to(self.device)),
                        dim=-1,
                    )
                    for s in range(0, len(samples), batch)
                ]
            )
            if all(isinstance(p, str) for p in prompts):
                texts = text_features(self.backbone, prompts, batch)
                similarity = (features @ texts.T).float().cpu().numpy()
            else:  # a dataset without prompts: the prompt signal judges nothing
                similarity = None
        features_np = features.float().cpu().numpy()
        self.clip_s += time.perf_counter() - clip_started
        thresholds = self.config.thresholds
        scores = {
            "contrast": _rounded(contrast),
            "structure": _rounded(structure),
        }
        usable = (scores["contrast"] >= thresholds.min_contrast) & (
            scores["structure"] >= thresholds.min_structure
        )
        if similarity is not None:
            rank, margin = prompt_signals(similarity, pids_array)
        else:
            rank = margin = np.full(len(samples), np.nan)
        identity = identity_signals(features_np, pids_array, usable)
        scores |= {
            "prompt_rank": _rounded(rank),
            "prompt_margin": _rounded(margin),
            "identity_consistency": _rounded(identity.consistency),
            "identity_margin": _rounded(identity.margin),
            "near_duplicate": _rounded(identity.near_duplicate),
        }
        keep, reason = decide(scores, thresholds)
        return {
            "key": [s["__key__"] for s in samples],
            "pid": pids,
            "keep": keep.tolist(),
            "reason": reason,
            **{name: values.astype(np.float32).tolist() for name, values in scores.items()},
            "near_duplicate_pid": identity.near_duplicate_pid.tolist(),
        }


def _rounded(values) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64), DECIMALS)


def score_shard(
    scorer: ShardScorer, storage, shard, run: str, meta: dict[str, Any]
) -> tuple[int, float, float]:
    """Score committed shard `shard` (index and sha256 as the driver planned it) and publish its file of
    `run` (atomic: a rerun finds it whole or not at all). Returns (samples, seconds spent, of which in
    the CLIP's forward passes)."""
    started, clip_before = time.perf_counter(), scorer.clip_s
    record = read_record(storage, shard.index)
    if record is None or record.sha256 != shard.sha256:
        raise DataError(f"{storage.url_for(shard.tar)} was re-published since the job started: rerun it")
    where = storage.url_for(record.tar)
    with storage.open_read(record.tar) as stream:
        samples = list(read_shard(stream, include=READ_IMAGE_EXTS | {"txt", "cls"}))
    keys = [s["__key__"] for s in samples]
    if keys != list(record.keys):
        raise DataError(f"{where}: its samples differ from its commit record's keys (a damaged shard)")
    columns = scorer.score(samples, where)
    columns["shard"] = [record.index] * len(samples)
    table = pa.table({name: columns[name] for name in schema().names}, schema=schema())
    part_meta = {**meta, "format": FORMAT, "shard": record.index, "shard_sha256": record.sha256}
    storage.put_bytes(encode_part(table, part_meta), part_name(run, record.index))
    return len(samples), time.perf_counter() - started, scorer.clip_s - clip_before
