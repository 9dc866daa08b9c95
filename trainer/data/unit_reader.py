"""The unit reader: one unit's images, with the style labels and words a batch needs, read in one go (a
shard streamed once, or a Re-ID folder's files)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dppp.dataset.format import READ_IMAGE_EXTS
from dppp.dataset.shard_reader import image_member, read_shard
from dppp.foundation.errors import DataError
from dppp.foundation.storage.urls import open_storage
from dppp.trainer.data.sources import CAMID, TrainingData, Unit

# Per identity, per member: (encoded image, style labels, words: {"texts": prompt, "captions": caption}).
UnitRows = list[list[tuple[bytes, dict[str, int], dict[str, str]]]]


class UnitReader:
    """Reads the units of `data`. `style_attributes`: the labels each image carries (from its json, or the
    folder's camid); `texts`: each sample's prompt (its `txt` member) too, for image-text pairs;
    `captioners`: dataset URL -> prompts.captions.AppearanceCaptioner, each sample's appearance caption."""

    def __init__(
        self,
        data: TrainingData,
        *,
        style_attributes: Sequence[str] = (),
        texts: bool = False,
        captioners: dict[str, Any] | None = None,
    ):
        missing = [a for a in style_attributes if a not in data.style_values]
        if missing:
            raise DataError(
                f"style attribute(s) {missing} are not labelled in every training source "
                f"(labelled: {sorted(data.style_values)})"
            )
        self.data = data
        self.style_attributes = tuple(style_attributes)
        self.texts = texts
        self.captioners = dict(captioners or {})

    def read(self, unit: Unit) -> UnitRows:
        """Per identity, per member: (encoded image, style labels, words). Streams the shard once."""
        texts = self.texts
        captioner = self.captioners.get(unit.root)
        if unit.tar is None:
            if texts:
                raise DataError(
                    f"{unit.name}: a Re-ID folder has no prompts; image-text pretraining needs dppp "
                    "shards, whose samples carry their prompt (txt)"
                )
            return [
                [
                    (_read_file(path), self._folder_style(camid), {})
                    for path, camid in zip(ident.members, ident.camids or (), strict=True)
                ]
                for ident in unit.identities
            ]
        storage = open_storage(unit.root, self.data.storage)
        samples = {}
        wanted = READ_IMAGE_EXTS | (
            {"json"} if self.style_attributes else set()
        )  # json only for style labels
        wanted |= {"txt"} if texts else set()
        wanted |= {"json"} if captioner else set()
        with storage.open_read(unit.tar) as stream:
            for sample in read_shard(
                stream, include=wanted, storage_config=self.data.storage, name=unit.name
            ):
                samples[sample["__key__"]] = sample
        out = []
        for ident in unit.identities:
            rows = []
            for key in ident.members:
                sample = samples.get(key)
                ext = image_member(sample) if sample else None
                if ext is None or (self.style_attributes and "json" not in sample):
                    raise DataError(
                        f"{unit.name}: sample {key!r} listed in its record lacks an image or json"
                    )
                style = (
                    self._sample_style(sample["json"], f"{unit.name}: sample {key!r}")
                    if self.style_attributes
                    else {}
                )
                text = sample.get("txt") if texts else None
                if texts and not (isinstance(text, str) and text.strip()):
                    raise DataError(
                        f"{unit.name}: sample {key!r} has no prompt (txt member); image-text "
                        "pretraining needs a prompt with every image"
                    )
                words = {"texts": text} if texts else {}
                if captioner:
                    attributes = (sample.get("json") or {}).get("attributes")
                    if not isinstance(attributes, dict):
                        raise DataError(f"{unit.name}: sample {key!r} records no attributes to caption")
                    words["captions"] = captioner(attributes)
                rows.append((sample[ext], style, words))
            out.append(rows)
        return out

    def _sample_style(self, meta: dict[str, Any], where: str) -> dict[str, int]:
        labels = {}
        for name in self.style_attributes:
            value = meta.get(CAMID) if name == CAMID else (meta.get("attributes") or {}).get(name)
            labels[name] = self._style_label(name, value, where)
        return labels

    def _folder_style(self, camid: int) -> dict[str, int]:
        return {name: self._style_label(name, camid, "folder image") for name in self.style_attributes}

    def _style_label(self, name: str, value: Any, where: str) -> int:
        values = self.data.style_values[name]
        try:
            return values.index(str(value))
        except ValueError:
            raise DataError(f"{where}: {name}={value!r} is not in the dataset's vocabulary") from None


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
