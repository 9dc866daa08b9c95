"""What the prompt engine hands to a renderer: one identity, and one view of it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_SAMPLE_KEY = re.compile(r"^p(\d+)_v(\d+)$")


def sample_key(pid: int, view: int) -> str:
    """The shard contract's sample key: dot-free, zero-padded, derived only from (pid, view)."""
    return f"p{pid:06d}_v{view:03d}"


def parse_sample_key(key: str) -> tuple[int, int] | None:
    """(pid, view) of a key `sample_key` made: parse_sample_key('p000012_v003') == (12, 3); None otherwise."""
    match = _SAMPLE_KEY.match(key)
    return (int(match.group(1)), int(match.group(2))) if match else None


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

    @property
    def key(self) -> str:
        return sample_key(self.pid, self.view)

    def record(self) -> dict[str, Any]:
        """The view as plain data: the fields of its shard sample's json that come from the prompt engine."""
        return {
            "key": self.key,
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
