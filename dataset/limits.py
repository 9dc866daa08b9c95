"""How large a shard member may be before the reader refuses it unread: one cap per member kind.

A tar header states each member's size before its data, so the reader (dataset/shard_reader.py) can
refuse an oversized member without reading a byte of it: the data is stepped over (and hashed, in
`verify`) in 1 MiB chunks, so memory stays bounded whatever a header claims. Without caps a json member
of a few GB would be read whole (and decoded, and printed by `dppp shards show`) by every command and
every training worker. The defaults leave wide headroom over what `dppp generate` writes; docs/shards.md
explains them. They live in the storage config that readers take (`ShardStorageConfig.member_limits`), which every command and
the trainer already take, and are set like any other config value (`--set train.data.storage.
member_limits.image_max=256MiB`, or `dppp shards ... --member-limit image=256MiB`).
"""

from __future__ import annotations

from pydantic import ByteSize, Field, ValidationError

from dppp.dataset.format import READ_IMAGE_EXTS
from dppp.foundation.errors import SettingError
from dppp.foundation.schema import StrictModel
from dppp.foundation.storage.config import StorageConfig

# tarfile reads a PAX extended header or a GNU long-name entry whole, before any member check can run;
# ours hold a name or a few fields (under 1 KiB). Not a setting: no valid shard comes near it.
MAX_HEADER_BYTES = 64 << 10


class MemberLimits(StrictModel):
    """The largest member of each kind any reader accepts (bytes; '1MiB', '64 MiB' and plain ints parse)."""

    # A sample's metadata: a few kB (attributes, prompt, seeds, renderer, versions).
    json_max: ByteSize = Field(ByteSize(1 << 20), gt=0)
    # The prompt: a few hundred bytes (a CLIP text budget of 77 tokens).
    txt_max: ByteSize = Field(ByteSize(64 << 10), gt=0)
    # The pid as decimal text: a few bytes.
    cls_max: ByteSize = Field(ByteSize(1 << 10), gt=0)
    # One encoded image: ~10-50 kB at Re-ID sizes, a few MB for a large PNG.
    image_max: ByteSize = Field(ByteSize(64 << 20), gt=0)

    def field_for(self, ext: str) -> str:
        """The setting that caps members with extension `ext` ('jpg' -> 'image_max')."""
        return "image_max" if ext in READ_IMAGE_EXTS else f"{ext}_max"

    def cap(self, ext: str) -> int:
        return int(getattr(self, self.field_for(ext)))


KINDS = {"json": "json_max", "txt": "txt_max", "cls": "cls_max", "image": "image_max"}


def limits_from_flags(flags: list[str] | None, base: MemberLimits | None = None) -> MemberLimits:
    """MemberLimits from `KIND=SIZE` flags (kind: json, txt, cls, image; e.g. 'image=256MiB') over `base`."""
    base = base or MemberLimits()
    updates = {}
    for flag in flags or []:
        kind, sep, size = flag.partition("=")
        if not sep or kind.strip() not in KINDS:
            raise SettingError(
                "member_limit", f"expected KIND=SIZE with KIND one of {', '.join(KINDS)}, got {flag!r}"
            )
        updates[KINDS[kind.strip()]] = size.strip()
    try:
        return MemberLimits.model_validate({**base.model_dump(), **updates})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SettingError("member_limit", f"{error['loc'][0]}: {error['msg']}") from None


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB'; 629145600 -> '600.0 MiB'."""
    return ByteSize(n).human_readable(separator=" ")


class ShardStorageConfig(StorageConfig):
    """Storage settings plus the largest shard member of each kind a reader accepts: every command and the
    trainer read shards with the storage config they were given (`generate.storage`, `train.data.storage`)."""

    member_limits: MemberLimits = MemberLimits()
