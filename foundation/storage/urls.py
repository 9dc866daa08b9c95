"""Opening storage: a local path or a URL -> the storage it names (and an object's key).

A storage backend is one module plus one entry in SCHEMES below: the URL scheme it serves and the function
that opens the rest of a URL (after "scheme://") as that storage. `open_storage` names no backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from dppp.foundation.errors import UserError
from dppp.foundation.storage.base import Storage, check_key, redact_url
from dppp.foundation.storage.config import StorageConfig
from dppp.foundation.storage.local import LocalStorage, open_file_url
from dppp.foundation.storage.s3 import open_s3_url


@dataclass(frozen=True)
class Scheme:
    # (rest of the URL after "scheme://", the whole URL, the storage config) -> the storage it names;
    # raises UserError for a URL of this scheme that names nothing valid.
    open: Callable[[str, str, StorageConfig], Storage]
    listed: bool = True  # named in the message for an unknown scheme (False: an alias such as s3a)


SCHEMES: dict[str, Scheme] = {}


def register_scheme(name: str, scheme: Scheme) -> None:
    """Serve `name://` URLs with `scheme` (a backend's module calls this once, at import or from a test)."""
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", name):
        raise ValueError(f"storage URL scheme {name!r}: lower-case letters, digits, '+', '.', '-' only")
    SCHEMES[name] = scheme


register_scheme("file", Scheme(open_file_url))
register_scheme("s3", Scheme(open_s3_url))
register_scheme("s3a", Scheme(open_s3_url, listed=False))


def open_storage(url: str, config: StorageConfig | None = None) -> Storage:
    """The storage rooted at `url`: a local path, or a URL of a registered scheme (file://, s3://)."""
    config = config or StorageConfig()
    if not isinstance(url, str) or not url.strip():
        raise UserError("storage URL is empty")
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$", url)
    if not match:
        return LocalStorage(url)
    name, rest = match.group(1).lower(), match.group(2)
    scheme = SCHEMES.get(name)
    if scheme is None:
        listed = [f"{known}://" for known, entry in SCHEMES.items() if entry.listed]
        raise UserError(
            f"unsupported storage URL scheme '{name}://' in {redact_url(url)!r}: use a local path, "
            + (", ".join(listed[:-1]) + " or " + listed[-1] if len(listed) > 1 else listed[0])
        )
    return scheme.open(rest, url, config)


def split_url(url: str, config: StorageConfig | None = None) -> tuple[Storage, str]:
    """The storage holding one object and the object's key: 's3://b/ds/shards/x.tar' -> (s3://b/ds/shards, 'x.tar')."""
    stripped = url.rstrip("/")
    head, sep, name = stripped.rpartition("/")
    if not sep or not name:
        return open_storage(".", config), check_key(stripped)
    if head.endswith(":/") or head.endswith(":"):  # "s3://bucket" alone: no object named
        raise UserError(f"{redact_url(url)!r} names a bucket, not an object")
    return open_storage(head or "/", config), name
