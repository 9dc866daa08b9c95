"""Sample keys: how a shard names the sample of view `view` of identity `pid` (`p000012_v003`), and back.

The key is the shard contract's, not the prompt engine's: the engine hands out (pid, view) and whoever writes
or reads a shard (the pipeline's worker, the trainer's sources, `dppp shards show`, `dppp prompts sample`)
names it here. So the key lives in dataset/, above prompts/, and prompts/ knows nothing of shard names; the
other way round (the key in prompts/spec.py, imported from here) would make the prompt engine the owner of
a name that only shards, records and index rows use.

Two patterns, two questions: SAMPLE_KEY_RE is the one shape `dppp generate` writes and readers parse into
(pid, view); KEY_RE is what the format admits as any sample's key (dot-free, as webdataset splits a member
name into key and extension at the first dot), which the writer and `dppp shards show` check.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dppp.prompts.spec import ViewSpec

SAMPLE_KEY_RE = re.compile(r"^p(\d+)_v(\d+)$")
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def sample_key(pid: int, view: int) -> str:
    """The sample key of (pid, view): dot-free, zero-padded, so keys sort as (pid, view) do:
    sample_key(12, 3) == 'p000012_v003'."""
    return f"p{pid:06d}_v{view:03d}"


def parse_sample_key(key: str) -> tuple[int, int] | None:
    """(pid, view) of a key `sample_key` made: parse_sample_key('p000012_v003') == (12, 3); None otherwise."""
    match = SAMPLE_KEY_RE.match(key)
    return (int(match.group(1)), int(match.group(2))) if match else None


def view_record(view: ViewSpec) -> dict[str, Any]:
    """The view's fields of its sample's json, its key first (what `dppp prompts sample` prints per view)."""
    return {"key": sample_key(view.pid, view.view), **view.record()}
