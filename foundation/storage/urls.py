"""Opening storage: a local path, file:// or s3:// URL -> the storage it names (and an object's key)."""

from __future__ import annotations

import re

from dppp.foundation.errors import UserError
from dppp.foundation.storage.base import Storage, check_key, check_prefix, redact_url
from dppp.foundation.storage.config import StorageConfig
from dppp.foundation.storage.local import LocalStorage
from dppp.foundation.storage.s3 import S3Storage


def open_storage(url: str, config: StorageConfig | None = None) -> Storage:
    """The storage rooted at `url`: a local path, file:///abs/path, or s3://bucket[/prefix]."""
    config = config or StorageConfig()
    if not isinstance(url, str) or not url.strip():
        raise UserError("storage URL is empty")
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$", url)
    if not match:
        return LocalStorage(url)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "file":
        if rest and not rest.startswith("/"):
            host = rest.split("/", 1)[0]
            if host != "localhost":
                raise UserError(
                    f"file URL {redact_url(url)!r} names host {host.rpartition('@')[2]!r}: "
                    "use file:///absolute/path"
                )
            rest = rest[len("localhost") :]
        from urllib.parse import unquote

        return LocalStorage(unquote(rest) or "/")
    if scheme in ("s3", "s3a"):
        authority = rest.split("/", 1)[0]
        # user:password@ before the bucket, also with a '/' in the password (then it reaches past the first '/')
        if "@" in authority or (":" in authority and "@" in rest):
            shown = (
                authority.rpartition("@")[2] + rest[len(authority) :]
                if "@" in authority
                else rest.partition("@")[2]
            )
            raise UserError(
                f"S3 URL '{scheme}://{shown}' with credentials (user:password@) before its bucket: "
                "refused; dppp takes credentials from the environment (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY), a profile or the instance's role, never from a URL"
            )
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UserError(f"S3 URL {redact_url(url)!r} has no bucket: expected s3://bucket/prefix")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,62}", bucket):
            raise UserError(f"S3 URL {redact_url(url)!r}: {bucket!r} is not a valid bucket name")
        try:
            check_prefix(prefix.strip("/"))
        except ValueError as exc:
            raise UserError(f"S3 URL {redact_url(url)!r}: {exc}") from None
        return S3Storage(bucket, prefix, config)
    raise UserError(
        f"unsupported storage URL scheme '{scheme}://' in {redact_url(url)!r}: use a local path, file:// or s3://"
    )


def split_url(url: str, config: StorageConfig | None = None) -> tuple[Storage, str]:
    """The storage holding one object and the object's key: 's3://b/ds/shards/x.tar' -> (s3://b/ds/shards, 'x.tar')."""
    stripped = url.rstrip("/")
    head, sep, name = stripped.rpartition("/")
    if not sep or not name:
        return open_storage(".", config), check_key(stripped)
    if head.endswith(":/") or head.endswith(":"):  # "s3://bucket" alone: no object named
        raise UserError(f"{redact_url(url)!r} names a bucket, not an object")
    return open_storage(head or "/", config), name
