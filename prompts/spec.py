"""What the prompt engine hands to a renderer: one identity, and one view of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IdentitySpec:
    pid: int
    seed: int  # identity-level seed: per-identity variation in renderers (shared noise, exact shades)
    attributes: dict[str, str]  # identity-level dimensions only
    num_views: int


@dataclass(frozen=True)
class ViewSpec:
    pid: int
    view: int
    camid: int
    seed: int  # view-level seed: the renderer's torch.Generator / numpy generator for this image
    identity_seed: int
    attributes: dict[str, str]  # identity-level and view-level dimensions, plus the camera's profile
    prompt: str
    negative_prompt: str
    dropped_slots: tuple[str, ...] = field(default=())  # template slots dropped to fit the token budget

    def record(self) -> dict[str, Any]:
        """The view as plain data: the fields of its shard sample's json that come from the prompt engine
        (the sample's key is the shard contract's: dataset.keys.view_record adds it)."""
        return {
            "pid": self.pid,
            "view": self.view,
            "camid": self.camid,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "attributes": dict(self.attributes),
            "seed": self.seed,
            "identity_seed": self.identity_seed,
            "dropped_slots": list(self.dropped_slots),
        }
