"""What the prompt engine hands to a renderer: one identity, and one view of it."""

from __future__ import annotations

from dataclasses import dataclass, field


def sample_key(pid: int, view: int) -> str:
    """The shard contract's sample key: dot-free, zero-padded, derived only from (pid, view)."""
    return f"p{pid:06d}_v{view:03d}"


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
