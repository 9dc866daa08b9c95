"""The model card of a CLIP folder made by `dppp pretrain`: model_card.json beside config.json.

    {"format": "dppp-clip-card/1", "architecture": {...}, "image_size": [h, w],
     "data": {"sources": [...], "identities": N, "images": M, "style_coverage": {attr: [values]},
              "people": [appearance digests of every pretraining person (trainer/data/identities.py)]},
     "training": {"steps", "epochs", "batch", "final_loss", "chance_loss", "temperature", "wall_s"},
     "zero_shot": {...trainer.zero_shot.ZeroShotReport.as_dict()...}, "command": "...", "code_version": "..."}

`people` is what keeps Re-ID splits honest: `dppp train` refuses a dataset sharing a person with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dppp.foundation.errors import DataError
from dppp.trainer.data.identities import check_disjoint
from dppp.trainer.data.specs import parse_source

CARD_FILE = "model_card.json"
CARD_FORMAT = "dppp-clip-card/1"


def read_card(folder: str | Path) -> dict[str, Any] | None:
    """The card of a local CLIP folder; None when the folder has none (any other CLIP, a hub id)."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DataError(f"{path}: not a {CARD_FORMAT} model card")
    return card


def write_card(folder: str | Path, card: dict[str, Any]) -> Path:
    path = Path(folder) / CARD_FILE
    path.write_text(
        json.dumps({"format": CARD_FORMAT, **card}, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return path


def check_people_disjoint(backbone: str, sources: list[str], storage_config) -> None:
    """A backbone pretrained here (its folder holds a model card listing its pretraining people) must not
    have seen the people of a dppp dataset it is trained or tested on: DataError naming the dataset."""
    card = read_card(backbone) if backbone != "tiny" and os.path.isdir(backbone) else None
    if not card:
        return
    seen = card.get("data", {}).get("people", [])
    for source in map(parse_source, sources):
        if source.is_dataset:
            check_disjoint(seen, source.path, f"pretraining corpus of backbone {backbone}", storage_config)
