"""`dppp pretrain`: CLIP-style image-text pretraining of the tiny CLIP on the (image, prompt) pairs of
dppp shards, on the same Ray Train path as `dppp train` (trainer/training/train.py launches, trainer/training/loop.py
runs each rank; this module adds only what differs: the model, one schedule, prompts in the batches, and
the result, a CLIP folder).

    result = run_pretrain(config.pretrain, ["runs/pretrain/corpus"], "runs/pretrain/train", workers=2)
    result.final_url      # <out>/<run_name>/final: config.json, model.safetensors, tokenizer, model_card.json

Checked on the driver before Ray starts (exit 2 with one message): every source is a dppp dataset whose
samples carry a prompt; the zero-shot datasets share no person with the pretraining corpus
(trainer/data/identities.py). The folder's model_card.json lists the corpus's people, so `dppp train` can refuse
Re-ID data that overlaps it. Checkpoints, resume (rerun with the same run name), the progress bar,
metrics.jsonl, TensorBoard and loss_curves.png are `dppp train`'s.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dppp.dataset.listing import committed_shards
from dppp.dataset.records import ATTRIBUTE_PREFIX, read_dataset_manifest, read_index
from dppp.dataset.shard_reader import read_shard
from dppp.foundation import __version__
from dppp.foundation.config import with_updates
from dppp.foundation.errors import DataError, SettingError
from dppp.foundation.storage.base import ObjectNotFound
from dppp.foundation.storage.urls import open_storage
from dppp.prompts.captions import AppearanceCaptioner
from dppp.prompts.taxonomy import taxonomy_from_dict
from dppp.trainer.clip.model_card import CARD_FILE, read_card, write_card
from dppp.trainer.data.identities import check_disjoint, people
from dppp.trainer.data.sources import open_training_data, taxonomy_vocab
from dppp.trainer.data.specs import parse_source
from dppp.trainer.evaluation.zero_shot import zero_shot_folder
from dppp.trainer.pretraining.config import PretrainConfig
from dppp.trainer.training.loop import Worker, _quiet_ray_train_logs
from dppp.trainer.training.train import absolute_out, launch, schedule_steps

# clip_pretrain.py (the model, which imports transformers: seconds) is imported inside pretrain_worker: the
# driver checks the data and launches Ray without it.


@dataclass
class PretrainResult:
    run_url: str
    final_url: str  # the CLIP folder
    steps: int
    wall_s: float
    card: dict[str, Any] = field(default_factory=dict)
    export: str | None = None  # the local copy of the folder, when `export` is set


def pretrain_schedules(config: PretrainConfig) -> list[tuple[int, Any, int]]:
    return [(1, config.schedule, 0)]


def check_prompts(url: str, storage_config) -> None:
    """The first sample of the dataset's first committed shard must carry a prompt (its txt member)."""
    storage = open_storage(url, storage_config)
    records = committed_shards(storage)
    if not records:
        raise DataError(f"{storage.url}: no committed shard (generate the pretraining corpus first)")
    with storage.open_read(records[0].tar) as stream:
        samples = read_shard(
            stream,
            include={"txt", "json"},
            storage_config=storage_config,
            name=storage.url_for(records[0].tar),
        )
        sample = next(iter(samples), None)
    text = (sample or {}).get("txt")
    if not isinstance(text, str) or not text.strip():
        raise DataError(
            f"{storage.url}: its samples carry no prompt (txt member): image-text pretraining needs a "
            "prompt with every image"
        )


def corpus_people(sources: list[str], storage_config) -> list[str]:
    """The appearance digests of every pretraining person (sorted; what the model card lists)."""
    digests: set[str] = set()
    for url in sources:
        found = people(url, storage_config)
        if found is None:
            raise DataError(
                f"{url}: dataset.json records no taxonomy, so its people cannot be told apart from "
                "the Re-ID splits'"
            )
        digests |= set(found.values())
    return sorted(digests)


def style_coverage(sources: list[str], storage_config) -> dict[str, dict[str, int]]:
    """Per view attribute (and camid): how many of the taxonomy's values the corpus shows."""
    seen: dict[str, set[str]] = {}
    possible: dict[str, set[str]] = {}
    for url in sources:
        storage = open_storage(url, storage_config)
        taxonomy = read_dataset_manifest(storage).get("taxonomy") or {}
        vocab = taxonomy_vocab(taxonomy, storage.url)
        names = [n for n in (taxonomy.get("view") or {})] + ["camid"]
        try:
            table = read_index(storage)
        except DataError:
            continue
        for name in names:
            column = "camid" if name == "camid" else ATTRIBUTE_PREFIX + name
            if column in table.column_names and name in vocab:
                seen.setdefault(name, set()).update(str(v) for v in table.column(column).to_pylist())
                possible.setdefault(name, set()).update(vocab[name])
    return {
        name: {"seen": len(seen[name] & possible[name]), "of": len(possible[name])} for name in sorted(seen)
    }


def run_pretrain(
    config: PretrainConfig,
    data: list[str] | None = None,
    out: str | None = None,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    progress_every: float | None = None,
) -> PretrainResult:
    """Pretrain the CLIP of `config.model` on the committed shards of `data` (default config.data.sources);
    the CLIP folder lands in <out>/<run_name>/final (and in `config.export` when set). Reruns resume."""
    config = with_updates(config, "pretrain", workers=workers, out=out)
    specs = list(data) if data else list(config.data.sources)
    if not specs:
        raise SettingError(
            "data", "no pretraining data: give a dppp dataset URL, or set pretrain.data.sources"
        )
    for spec in specs:
        if not parse_source(spec).is_dataset:
            raise DataError(f"{spec}: a Re-ID folder has no prompts; pretraining needs dppp datasets")
    sources = [parse_source(spec).path for spec in specs]
    training_data = open_training_data(sources, config.data.storage)
    for url in sources:
        check_prompts(url, config.data.storage)
    if config.model.appearance_weight > 0:
        captioners(sources, config.data.storage)  # a taxonomy that cannot caption fails here, not in a worker

    # Ray Train workers run in their own working directory: relative local paths are made absolute here.
    given_zero_shot = config.zero_shot.datasets  # as given, for the model card
    zero_shot = config.zero_shot.model_copy(
        update={"datasets": tuple(absolute_out(u) for u in config.zero_shot.datasets)}
    )
    config = config.model_copy(update={"zero_shot": zero_shot})
    people = corpus_people(sources, config.data.storage)
    for url in config.zero_shot.datasets:
        check_disjoint(people, url, "pretraining corpus", config.data.storage)
    steps = schedule_steps(config, training_data, config.workers, pretrain_schedules(config))
    card_data = {
        "sources": sources,
        "identities": training_data.num_classes,
        "images": training_data.num_images,
        "style_coverage": style_coverage(sources, config.data.storage),
        "people": people,
        "zero_shot_datasets": list(given_zero_shot),
    }
    result = launch(
        config,
        training_data,
        steps,
        pretrain_worker,
        ray_address=ray_address,
        progress=progress,
        progress_every=progress_every,
        extra={"card_data": card_data},
    )

    export = export_folder(result.final_url, config.export, config) if config.export else None
    card = read_card(export) if export else _read_remote_card(result.final_url, config)
    return PretrainResult(result.run_url, result.final_url, result.steps, result.wall_s, card or {}, export)


def _read_remote_card(final_url: str, config: PretrainConfig) -> dict[str, Any] | None:
    try:
        return json.loads(open_storage(final_url, config.data.storage).read_bytes(CARD_FILE))
    except ObjectNotFound:
        return None


def export_folder(final_url: str, export: str, config: PretrainConfig) -> str:
    """Copy the finished CLIP folder to the local folder `export`, replacing it whole (via a temp folder)."""
    storage = open_storage(final_url, config.data.storage)
    target = Path(export).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for obj in storage.list(""):
            (staging / obj.key).parent.mkdir(parents=True, exist_ok=True)
            (staging / obj.key).write_bytes(storage.read_bytes(obj.key))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def captioners(sources, storage_config) -> dict[str, Any]:
    """dataset URL -> the appearance captioner of its taxonomy (dataset.json's copy)."""
    out = {}
    for url in sources:
        storage = open_storage(url, storage_config)
        taxonomy = read_dataset_manifest(storage).get("taxonomy")
        if not isinstance(taxonomy, dict):
            raise DataError(
                f"{storage.url}: dataset.json has no taxonomy, so no appearance caption can be written"
            )
        out[storage.url] = AppearanceCaptioner(taxonomy_from_dict(taxonomy, source=storage.url))
    return out


def pretrain_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker for `dppp pretrain`."""
    _quiet_ray_train_logs()
    config = PretrainConfig.model_validate(loop_config["config"])
    worker = PretrainWorker(config, loop_config["data"], loop_config["out"], loop_config.get("board"))
    worker.card_data = loop_config.get("card_data") or {}
    worker.run()


class PretrainWorker(Worker):
    card_data: dict[str, Any] = {}

    @property
    def batch_images(self) -> int:
        return self.config.data.ids_per_batch * self.config.data.images_per_id

    def build(self):
        from dppp.trainer.pretraining.clip_pretrain import ClipPretrainModel

        return ClipPretrainModel(self.config.model).to(self.device)

    def schedules(self, model) -> list[tuple[int, Any, int]]:
        return pretrain_schedules(self.config)

    def batch_options(self, model, phase: int) -> dict[str, Any]:
        if self.config.model.appearance_weight > 0 and not hasattr(self, "_captioners"):
            # The units' storage URLs, absolute (a relative --data would name the worker's own folder).
            roots = sorted({unit.root for unit in self.data.units if unit.root})
            self._captioners = captioners(roots, self.config.data.storage)
        return {"texts": True, "captioners": getattr(self, "_captioners", {})}

    def save_final(self, model, folder: Path) -> str:
        """The CLIP folder, then its model card (the folder's commit marker), with the zero-shot check of
        the saved folder loaded as `train.model.backbone` loads it."""
        model.save_pretrained(folder)
        last = self.last_epoch or self.log.last("epoch")
        card: dict[str, Any] = {
            "architecture": self.config.model.architecture.model_dump(mode="json"),
            "image_size": list(self.config.model.image_size),
            "data": self.card_data,
            "training": {
                "steps": self.global_step,
                "epochs": self.config.schedule.epochs,
                "batch": self.batch_images * self.world,
                "workers": self.world,
                "final_loss": last.get("loss"),  # clip + appearance_weight x appearance
                "final_clip_loss": last.get("loss/clip"),
                "final_appearance_loss": last.get("loss/appearance"),
                "chance_loss": math.log(self.batch_images),  # of either term, per worker batch
                "temperature": 1
                / float(model.clip.logit_scale.detach().exp().clamp(max=self.config.model.max_logit_scale)),
                "schedule": self.config.schedule.model_dump(mode="json"),
                "seed": self.config.seed,
            },
            "code_version": __version__,
        }
        if self.config.zero_shot.datasets:
            report = zero_shot_folder(
                str(folder),
                self.config.zero_shot,
                self.config.model.image_size,
                storage_config=self.config.data.storage,
            )
            card["zero_shot"] = {
                **report.as_dict(),
                "datasets": self.card_data.get("zero_shot_datasets", report.datasets),
            }
            self.log.write(
                {
                    "kind": "zero_shot",
                    "step": self.global_step,
                    "mean_accuracy": report.mean_accuracy,
                    "mean_chance": report.mean_chance,
                    **{f"zero_shot/{a.name}": a.accuracy for a in report.attributes},
                }
            )
        write_card(folder, card)
        return CARD_FILE
