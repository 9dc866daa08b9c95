"""`dppp eval`: Re-ID evaluation of a trained model on benchmark folders or synthetic splits.

    report = run_eval("runs/demo/train/run", ["market1501:/data/Market-1501-v15.09.15"], EvalConfig(),
                      out="report.json")
    report.datasets[0].rank1, report.datasets[0].mAP

`EvalConfig` (trainer/evaluation/config.py) is the experiment's `eval` section. `run_eval` wires the pieces:
load a checkpoint (dppp.trainer.methods.checkpoint, from local disk or object storage), read each dataset
(dppp.trainer.data.readers), extract features through the model's eval transform (dppp.trainer.evaluation.features,
dppp.trainer.data.transforms), rank with the Market-1501 protocol, optionally re-ranked (dppp.trainer.evaluation.metrics), and
report.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dppp.foundation.errors import DataError, SettingError
from dppp.foundation.storage.base import redact_url
from dppp.foundation.storage.urls import open_storage, split_url
from dppp.trainer.clip.model_card import check_people_disjoint
from dppp.trainer.data.readers import synthetic_images
from dppp.trainer.data.specs import parse_dataset_spec, read_dataset
from dppp.trainer.evaluation.config import EvalConfig
from dppp.trainer.evaluation.metrics import chance_rank1, evaluate_ranking, re_rank
from dppp.trainer.evaluation.rank_picture import rank_drawer
from dppp.trainer.methods.checkpoint import load_checkpoint
from dppp.trainer.methods.config import ModelConfig

# torch, and the transforms and feature extraction that import it, are imported inside the functions that
# run the model: a malformed dataset spec or a missing checkpoint is reported before torch loads.

# ---- `dppp eval`: model -> features -> ranking -> report ------------------------------------------------

# The files a checkpoint folder may list in its checkpoint.json (dppp.trainer.methods.checkpoint): anything else in a
# downloaded checkpoint.json is refused, so a crafted one cannot make us write outside the temp folder.
_CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "optimizer.json")
_META_FILE = "checkpoint.json"
_RUN_FINAL_DIR = "final"  # dppp.trainer.training.loop.FINAL_DIR: a training run folder holds its model there


@dataclass(frozen=True)
class DatasetReport:
    """The figures of one dataset; rank-k and mAP/mINP are fractions in [0, 1] over valid queries."""

    spec: str  # the NAME:PATH given (URL credentials redacted)
    name: str
    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    num_query: int
    num_gallery: int
    num_valid: int  # queries with a true match from another camera
    num_skipped: int  # queries without one (in no average)
    seconds: float  # feature extraction + ranking (timing only: not part of the comparison of two runs)
    cmc: list[float] = field(default_factory=list)  # rank-1..max_rank accuracies
    chance_rank1: float = 0.0  # rank-1 of a random ranking under the same protocol: the floor to beat


@dataclass(frozen=True)
class EvalReport:
    model: dict[
        str, Any
    ]  # url, method, phase, step, num_classes, backbone, image_size, sha256 of the weights
    config: dict[str, Any]  # the EvalConfig used
    datasets: tuple[DatasetReport, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "model": self.model,
            "config": self.config,
            "datasets": [asdict(d) for d in self.datasets],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True) + "\n"


REPORT_FORMAT = "dppp-eval-report/1"


def run_eval(
    model_path_or_url: str,
    datasets: Sequence[str] | None = None,
    config: EvalConfig | None = None,
    out: str | None = None,
    *,
    storage_config=None,
    on_dataset: Callable[[DatasetReport], None] | None = None,
    ranks: str | None = None,
    ranks_queries: int = 8,
    ranks_top_k: int = 10,
) -> EvalReport:
    """Evaluate a trained model on each NAME:PATH dataset (default: config.datasets) with the Market-1501
    protocol; write the JSON report to `out` (a local path or s3:// URL) when given.

    `model_path_or_url`: a checkpoint folder (model.safetensors + checkpoint.json) or a training run folder
    holding one in final/, on local disk, file:// or s3:// (only the checkpoint's files are downloaded).
    Every dataset spec and the model are checked before any feature is extracted; nothing is written to
    `out` unless every dataset was evaluated. `ranks`: a local PNG path for the ranked-results picture
    (trainer/evaluation/rank_picture.py; `ranks_queries` rows of the top `ranks_top_k`), one per dataset (with
    several datasets, "-1", "-2", ... before the suffix).
    """
    config = config or EvalConfig()
    specs = list(datasets) if datasets else list(config.datasets)
    if not specs:
        raise SettingError(
            "datasets", "no dataset to evaluate on: give NAME:PATH (one or more), or set eval.datasets"
        )

    parsed = [parse_dataset_spec(spec) for spec in specs]  # a malformed spec fails before the model loads
    with _local_checkpoint(model_path_or_url, storage_config) as folder:
        model, state = load_checkpoint(folder)
        model_info = _model_info(model_path_or_url, folder, state)

    # Test people seen in the backbone's pretraining would flatter the figures: refused, as for training.
    check_people_disjoint(
        state.model_config.backbone, [s.path for s in parsed if s.is_dataset], storage_config
    )
    splits = [
        _read_split(spec, source, config, storage_config) for spec, source in zip(specs, parsed, strict=True)
    ]

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    results = []
    for number, (spec, source, split) in enumerate(zip(specs, parsed, splits, strict=True), start=1):
        draw = None
        if ranks is not None:
            target = Path(ranks)
            if len(specs) > 1:
                target = target.with_name(f"{target.stem}-{number}{target.suffix}")
            draw = rank_drawer(
                split, source, target, redact_url(spec), storage_config, ranks_queries, ranks_top_k
            )
        result = _evaluate_split(
            model, split, source, config, device, storage_config, redact_url(spec), on_distances=draw
        )
        results.append(result)
        if on_dataset is not None:
            on_dataset(result)
    report = EvalReport(model_info, config.model_dump(mode="json"), tuple(results))
    if out is not None:
        _write_report(report, out, storage_config)
    return report


def read_splits(specs: Sequence[str], config: EvalConfig, storage_config=None) -> list[tuple[str, Any, Any]]:
    """(spec, parsed source, query/gallery split) of each NAME:PATH: what `evaluate_splits` ranks."""
    parsed = [parse_dataset_spec(spec) for spec in specs]
    return [
        (spec, source, _read_split(spec, source, config, storage_config))
        for spec, source in zip(specs, parsed, strict=True)
    ]


def evaluate_splits(
    model, splits: Sequence[tuple[str, Any, Any]], config: EvalConfig, device, storage_config=None
) -> list[DatasetReport]:
    """`dppp eval`'s figures of `model` (in eval mode: the caller sets it) on each of `read_splits`'s."""
    return [
        _evaluate_split(model, split, source, config, str(device), storage_config, redact_url(spec))
        for spec, source, split in splits
    ]


def untrained_model(model_config):
    """What a run of `model_config` starts from, for retrieval: its backbone with bot's head, untrained, in
    eval mode. Its BNNeck is at its initial state (running mean 0, variance 1, scale 1, shift 0), which only
    rescales, so it ranks by the backbone's own projected features."""
    from dppp.trainer.methods.model import build_model

    # bot: the shared image path and head without the method's text side, which retrieval never reads.
    head_only = ModelConfig.model_validate({**model_config.model_dump(), "method": "bot"})
    model = build_model(head_only, num_classes=2)  # the classifier is never used for retrieval
    model.set_phase(model.phases[-1])
    model.eval()
    return model


def evaluate_untrained(
    model_config, specs: Sequence[str], config: EvalConfig, storage_config=None
) -> list[DatasetReport]:
    """`dppp eval`'s figures, on the same splits and protocol, of what a run starts from
    (`untrained_model`): the floor a trained model's figures are read against."""
    import torch

    splits = read_splits(specs, config, storage_config)
    check_people_disjoint(
        model_config.backbone, [s.path for _, s, _ in splits if s.is_dataset], storage_config
    )
    model = untrained_model(model_config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return evaluate_splits(model, splits, config, device, storage_config)


class _local_checkpoint:  # noqa: N801 - used as a context manager, like contextlib's helpers
    """The local folder holding the checkpoint at `url`: the folder itself (or its final/) on local disk;
    a temp folder with checkpoint.json and the files it lists, downloaded, for any other storage."""

    def __init__(self, url: str, storage_config):
        self.url, self.storage_config, self.tmp = str(url), storage_config, None

    def __enter__(self) -> Path:
        storage = open_storage(self.url, self.storage_config)
        if storage.local_root is not None:
            return self._local(storage.local_root)
        prefix = self._remote_prefix(storage)

        self.tmp = tempfile.TemporaryDirectory(prefix="dppp-eval-model-")
        try:
            return self._download(storage, prefix, Path(self.tmp.name))
        except BaseException:
            self.tmp.cleanup()  # __exit__ does not run when __enter__ raises
            raise

    def _download(self, storage, prefix: str, folder: Path) -> Path:
        meta = storage.read_bytes(prefix + _META_FILE)
        try:
            files = json.loads(meta)["files"]
            names = list(files)
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{storage.url_for(prefix + _META_FILE)}: not valid checkpoint JSON") from None
        strangers = [n for n in names if n not in _CHECKPOINT_FILES]
        if strangers:
            raise DataError(
                f"{storage.url_for(prefix + _META_FILE)} lists unexpected file(s) {strangers[:3]} "
                f"(a checkpoint holds only {', '.join(_CHECKPOINT_FILES)})"
            )
        for name in names:
            if name.startswith("optimizer"):
                continue  # evaluation needs the weights only; read_state checks what is present
            (folder / name).write_bytes(storage.read_bytes(prefix + name))
        # checkpoint.json last, without the optimizer entries we did not fetch (their digests stay checked
        # for the files we did): the same commit-marker order as on the writer's side.
        data = json.loads(meta)
        data["files"] = {n: d for n, d in files.items() if not n.startswith("optimizer")}
        (folder / _META_FILE).write_text(json.dumps(data), encoding="utf-8")
        return folder

    def __exit__(self, *exc_info) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()

    def _local(self, root: Path) -> Path:
        if (root / _META_FILE).is_file():
            return root
        if (root / _RUN_FINAL_DIR / _META_FILE).is_file():
            return root / _RUN_FINAL_DIR
        if not root.exists():
            raise DataError(f"model {self.url} does not exist")
        raise DataError(
            f"{self.url} is not a dppp model: no {_META_FILE} in it (nor in {_RUN_FINAL_DIR}/, "
            f"as a training run folder would have)"
        )

    def _remote_prefix(self, storage) -> str:
        for prefix in ("", f"{_RUN_FINAL_DIR}/"):
            if storage.exists(prefix + _META_FILE):
                return prefix
        raise DataError(
            f"{redact_url(self.url)} is not a dppp model: no {_META_FILE} under it (nor under "
            f"{_RUN_FINAL_DIR}/, as a training run folder would have)"
        )


def _model_info(url: str, folder: Path, state) -> dict[str, Any]:
    meta = json.loads((folder / _META_FILE).read_text(encoding="utf-8"))
    return {
        "url": redact_url(str(url)),
        "method": state.method,
        "phase": state.phase,
        "step": state.step,
        "num_classes": state.num_classes,
        "backbone": state.model_config.backbone,
        "image_size": list(state.model_config.image_size),
        "retrieval_feature": state.model_config.retrieval_feature,
        "model_sha256": meta["files"].get("model.safetensors"),
    }


def _read_split(spec: str, source, config: EvalConfig, storage_config):
    options = config.synthetic
    if source.is_dataset:
        split = read_dataset(
            spec,
            seed=options.seed,
            queries_per_camera=options.queries_per_camera,
            held_out_pids=options.held_out_pids,
            storage_config=storage_config,
            curation=options.curation,
        )
    else:
        split = read_dataset(spec)
    if not split.query or not split.gallery:
        raise DataError(
            f"dataset {redact_url(spec)}: {len(split.query)} query and {len(split.gallery)} gallery "
            f"image(s): both are needed"
        )
    return split


def _evaluate_split(
    model,
    split,
    source,
    config: EvalConfig,
    device: str,
    storage_config,
    spec: str,
    on_distances: Callable[[Any], None] | None = None,
) -> DatasetReport:
    from dppp.trainer.data.transforms import EvalTransform
    from dppp.trainer.evaluation.features import distance_matrix, extract_features

    started = time.perf_counter()
    transform = EvalTransform(model.config.image_size)  # the training engineer's deterministic eval path

    def features(items):
        if source.is_dataset:  # items live inside the shards: stream their images back
            images = (
                transform(image)
                for image in synthetic_images(source.path, items, storage_config=storage_config)
            )
            return extract_features(
                model.encode_images, images, config.batch_size, config.flip, device=device
            )
        return extract_features(
            model.encode_images, items, config.batch_size, config.flip, transform=transform, device=device
        )

    q, g = features(split.query), features(split.gallery)
    distmat = distance_matrix(q, g, config.metric)
    if config.rerank.enabled:
        rr = config.rerank
        distmat = re_rank(
            distmat,
            distance_matrix(q, q, config.metric),
            distance_matrix(g, g, config.metric),
            k1=rr.k1,
            k2=rr.k2,
            lambda_=rr.lambda_value,
        )
    if on_distances is not None:
        on_distances(distmat)
    pids_and_cams = (
        [i.pid for i in split.query],
        [i.pid for i in split.gallery],
        [i.camid for i in split.query],
        [i.camid for i in split.gallery],
    )
    result = evaluate_ranking(distmat, *pids_and_cams, max_rank=max(config.max_rank, 10))  # rank-10 always
    if result.num_valid == 0:
        raise DataError(
            f"dataset {spec}: none of its {len(split.query)} queries has a true match in the gallery "
            f"from another camera, so nothing can be measured"
        )
    return DatasetReport(
        spec,
        split.name,
        result.rank(1),
        result.rank(5),
        result.rank(10),
        float(result.mAP),
        float(result.mINP),
        len(split.query),
        len(split.gallery),
        result.num_valid,
        result.num_skipped,
        round(time.perf_counter() - started, 3),
        [float(x) for x in result.cmc[: config.max_rank]],
        chance_rank1(*pids_and_cams),
    )


def _write_report(report: EvalReport, out: str, storage_config) -> None:
    """Atomic publish (temp + rename on disk, one PUT on S3): never a half-written report."""
    if "://" in out:
        storage, key = split_url(out, storage_config)
    else:
        target = Path(out).expanduser().absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        storage, key = open_storage(str(target.parent)), target.name
    storage.put_bytes(report.to_json().encode("utf-8"), key)
