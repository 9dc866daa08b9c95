"""Zero-shot attribute check of a CLIP: does its text tower mean something on our images?

For each attribute of the taxonomy (gender, upper colour, upper garment, illumination, scene, ...) the
held-out images are classified by text alone, and the accuracy is set beside chance:

1. class prompts: the prompt engine writes the prompts of `ensemble_identities` people nobody renders
   (their own seed); for attribute A and each of its values v, the class feature is the mean normalised
   text feature of the prompts in which A = v (a prompt ensemble, as CLIP's zero-shot classifiers average
   templates: every other attribute averages out). Prompts that hide A (a bag's colour when there is no
   bag) or dropped its slot for the token budget are left out of A's classes.
2. each held-out image (a dppp dataset of other people; its json records the true attributes) is given
   the value whose class feature has the highest cosine with its image feature.

Chance is 1 / (number of classes); `majority` is the accuracy of always answering the held-out set's most
frequent value (some attributes are far from uniform). No image is used to build a class: an attribute
is read from an image only if the text tower and the image tower agree on what its words mean.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from dppp.dataset.format import READ_IMAGE_EXTS
from dppp.dataset.limits import ShardStorageConfig
from dppp.dataset.listing import committed_shards
from dppp.dataset.shard_reader import image_member, read_shard
from dppp.foundation.errors import DataError
from dppp.foundation.storage.urls import open_storage
from dppp.prompts.config import PromptsConfig
from dppp.prompts.engine import PromptEngine
from dppp.prompts.taxonomy import load_taxonomy
from dppp.prompts.tokens import EstimatedTokenCounter
from dppp.trainer.clip.backbone import load_backbone
from dppp.trainer.data.identities import _matches
from dppp.trainer.data.transforms import EvalTransform
from dppp.trainer.evaluation.config import ZeroShotConfig
from dppp.trainer.methods.config import ModelConfig

CAMERA_ATTRIBUTES = ("scene",)  # the camera profile column that prompts name ("in a subway station platform")


@dataclass(frozen=True)
class AttributeScore:
    name: str
    classes: int
    images: int
    accuracy: float
    chance: float  # 1 / classes
    majority: float  # always the held-out set's most frequent value


@dataclass
class ZeroShotReport:
    datasets: list[str]
    images: int
    attributes: list[AttributeScore] = field(default_factory=list)

    @property
    def mean_accuracy(self) -> float:
        return sum(a.accuracy for a in self.attributes) / max(1, len(self.attributes))

    @property
    def mean_chance(self) -> float:
        return sum(a.chance for a in self.attributes) / max(1, len(self.attributes))

    @property
    def mean_majority(self) -> float:
        return sum(a.majority for a in self.attributes) / max(1, len(self.attributes))

    def as_dict(self) -> dict[str, Any]:
        return {
            "datasets": self.datasets,
            "images": self.images,
            "mean_accuracy": self.mean_accuracy,
            "mean_chance": self.mean_chance,
            "mean_majority": self.mean_majority,
            "attributes": [asdict(a) for a in self.attributes],
        }

    def table(self) -> str:
        """A plain-text table (fits 80 columns), one attribute a line, figures in %."""
        lines = [
            f"{'attribute':<16} {'classes':>7} {'images':>6} {'zero-shot':>9} {'chance':>7} {'majority':>8}"
        ]
        for a in self.attributes:
            lines.append(
                f"{a.name:<16} {a.classes:>7} {a.images:>6} {100 * a.accuracy:>9.1f} "
                f"{100 * a.chance:>7.1f} {100 * a.majority:>8.1f}"
            )
        lines.append(
            f"{'mean':<16} {'':>7} {'':>6} {100 * self.mean_accuracy:>9.1f} {100 * self.mean_chance:>7.1f} "
            f"{100 * self.mean_majority:>8.1f}"
        )
        return "\n".join(lines)


def report_from_dict(data: dict[str, Any]) -> ZeroShotReport:
    """A report back from its `as_dict()` (e.g. from a model card)."""
    return ZeroShotReport(
        list(data.get("datasets", [])),
        int(data.get("images", 0)),
        [AttributeScore(**a) for a in data.get("attributes", [])],
    )


def class_prompts(config: ZeroShotConfig) -> tuple[dict[str, dict[str, list[str]]], dict[str, Any]]:
    """attribute -> value -> prompts in which the attribute has that value (visible and not dropped),
    and the taxonomy's identity dimensions as plain data (for the hidden-value rule)."""
    taxonomy = load_taxonomy(config.taxonomy)
    identity_dims = taxonomy.as_dict()["identity"]
    engine = PromptEngine(
        taxonomy,
        PromptsConfig(taxonomy=config.taxonomy),
        config.seed,
        identities=config.ensemble_identities,
        token_counter=EstimatedTokenCounter(),
    )
    names = list(taxonomy.identity_names) + list(taxonomy.view_names) + list(CAMERA_ATTRIBUTES)
    out: dict[str, dict[str, list[str]]] = {name: {} for name in names}
    for view in engine.iter_views(range(config.ensemble_identities)):
        hidden = _hidden(view.attributes, identity_dims)
        for name in names:
            if name in hidden or name in view.dropped_slots:
                continue
            out[name].setdefault(str(view.attributes[name]), []).append(view.prompt)
    return out, identity_dims


def _hidden(attributes: dict[str, Any], identity_dims: dict[str, Any]) -> set[str]:
    hidden = set()
    for name, spec in identity_dims.items():
        rule = (spec or {}).get("hidden_when")
        if rule and all(_matches(attributes.get(k), v) for k, v in rule.items()):
            hidden.add(name)
    return hidden


def held_out_images(datasets: list[str], image_size: tuple[int, int], max_images: int, storage_config=None):
    """(pixel tensors [N, 3, H, W], attribute dicts) of up to `max_images` images, shard by shard."""
    transform = EvalTransform(image_size)
    images, attributes = [], []
    for url in datasets:
        storage_config = storage_config or ShardStorageConfig()
        storage = open_storage(url, storage_config)
        records = committed_shards(storage)
        if not records:
            raise DataError(f"{storage.url}: no committed shard to run the zero-shot check on")
        for record in records:
            with storage.open_read(record.tar) as stream:
                for sample in read_shard(
                    stream,
                    include=READ_IMAGE_EXTS | {"json"},
                    storage_config=storage_config,
                    name=storage.url_for(record.tar),
                ):
                    ext = image_member(sample)
                    meta = sample.get("json") or {}
                    if ext is None or not isinstance(meta.get("attributes"), dict):
                        raise DataError(
                            f"{storage.url_for(record.tar)}: sample {sample['__key__']} lacks an image "
                            "or its attributes"
                        )
                    images.append(
                        transform(sample[ext], None, f"{storage.url_for(record.tar)}: {sample['__key__']}")
                    )
                    attributes.append({k: str(v) for k, v in meta["attributes"].items()})
                    if len(images) >= max_images:
                        return torch.stack(images), attributes
    if not images:
        raise DataError("no held-out image for the zero-shot check")
    return torch.stack(images), attributes


def text_features(backbone, prompts: list[str], batch_size: int):
    """Normalised CLIP text features of plain prompts (the backbone's own tokenizer and pooling)."""
    tokenizer = backbone.tokenizer
    out = []
    for start in range(0, len(prompts), batch_size):
        ids = tokenizer(
            prompts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        )["input_ids"]
        ids = ids.to(backbone.token_embedding.weight.device)
        out.append(F.normalize(backbone.encode_text(ids, backbone.token_embedding(ids)), dim=-1))
    return torch.cat(out)


def zero_shot(backbone, config: ZeroShotConfig, *, storage_config=None) -> ZeroShotReport:
    """The check on a loaded `dppp.trainer.clip.backbone.ClipBackbone` (any CLIP: pretrained here, or a hub model)."""
    if not config.datasets:
        raise DataError(
            "the zero-shot check needs held-out data: set zero_shot.datasets (dppp datasets of people "
            "the CLIP was not trained on)"
        )
    prompts, identity_dims = class_prompts(config)
    pixels, truths = held_out_images(
        list(config.datasets), backbone.image_size, config.max_images, storage_config
    )
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            device = backbone.token_embedding.weight.device
            image = torch.cat(
                [
                    F.normalize(backbone.encode_image(pixels[s : s + config.batch_size].to(device)), dim=-1)
                    for s in range(0, len(pixels), config.batch_size)
                ]
            )
            report = ZeroShotReport(list(config.datasets), len(pixels))
            # Every distinct prompt is encoded once; each attribute's classes average rows of this table.
            unique = sorted(
                {p for by_value in prompts.values() for texts in by_value.values() for p in texts}
            )
            row = {p: i for i, p in enumerate(unique)}
            table = text_features(backbone, unique, config.batch_size)
            for name, by_value in prompts.items():
                values = sorted(v for v, texts in by_value.items() if len(texts) >= config.min_prompts)
                if len(values) < 2:
                    continue
                classes = torch.stack(
                    [F.normalize(table[[row[p] for p in by_value[v]]].mean(0), dim=0) for v in values]
                )
                keep = [
                    i
                    for i, t in enumerate(truths)
                    if t.get(name) in values and name not in _hidden(t, identity_dims)
                ]
                if not keep:
                    continue
                predicted = (image[keep] @ classes.t()).argmax(dim=1).tolist()
                true = [values.index(truths[i][name]) for i in keep]
                correct = sum(p == t for p, t in zip(predicted, true, strict=True))
                majority = Counter(true).most_common(1)[0][1] / len(true)
                report.attributes.append(
                    AttributeScore(
                        name, len(values), len(keep), correct / len(keep), 1 / len(values), majority
                    )
                )
    finally:
        backbone.train(was_training)
    return report


def zero_shot_folder(
    folder: str, config: ZeroShotConfig, image_size: tuple[int, int], *, storage_config=None
) -> ZeroShotReport:
    """Load a CLIP folder (or hub id) as `train.model.backbone` would, at the Re-ID input size, and check it."""
    backbone = load_backbone(ModelConfig(backbone=folder, image_size=image_size), [])
    return zero_shot(backbone, config, storage_config=storage_config)
