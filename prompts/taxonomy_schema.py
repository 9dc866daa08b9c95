"""The taxonomy YAML's schema: the pydantic models a taxonomy file is validated against, the camera columns
a camera's fields become, and the helpers that name a place in the file (`yaml_path`) and read a YAML
scalar as an attribute value (`condition_value`). prompts/taxonomy.py compiles a validated model into the
sampler's tables (prompts/taxonomy_tables.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from dppp.foundation.schema import StrictModel

# The camera profile as attribute columns, and the camera-table field each comes from.
CAMERA_COLUMNS = {
    "camera": "camid",
    "scene": "scene",
    "indoor": "indoor",
    "camera_height": "mount_height",
    "camera_angle": "angle",
    "camera_distance": "distance",
    "image_quality": "quality",
}

ConditionValue = str | int | float | bool
Conditions = dict[str, ConditionValue | list[ConditionValue]]


class RuleModel(StrictModel):
    when: Conditions
    weights: dict[str, float]


class DimensionModel(StrictModel):
    values: dict[str, float]
    rules: list[RuleModel] = []
    hidden_when: Conditions | None = None


class CameraModel(StrictModel):
    camid: int
    scene: str
    indoor: bool
    mount_height: str
    angle: str
    distance: str
    quality: str
    weight: float = 1.0


class SlotModel(StrictModel):
    slot: str
    text: str
    when: Conditions = {}
    priority: int = 0
    appearance: bool = False
    list: str | None = None


class TemplatesModel(StrictModel):
    lists: dict[str, str] = {}
    positive: list[SlotModel]
    negative: list[SlotModel] = []


Channel = Annotated[int, Field(ge=0, le=255)]


class TaxonomyModel(StrictModel):
    palette: dict[str, tuple[Channel, Channel, Channel]] = {}
    identity: dict[str, DimensionModel]
    view: dict[str, DimensionModel]
    cameras: list[CameraModel]
    templates: TemplatesModel


def yaml_path(*parts: Any) -> str:
    """('identity', 'hair', 'rules', 0, 'when') -> 'identity.hair.rules[0].when'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def condition_value(value: ConditionValue) -> str:
    """YAML reads `yes` as true and `3` as a number; attributes are strings ("yes", "3")."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
