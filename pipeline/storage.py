"""Object storage: one small interface, two implementations (local/file:// and s3:// via boto3)."""

from __future__ import annotations

from dppp.schema import StrictModel


class StorageConfig(StrictModel):
    # None: boto3's standard resolution (AWS_ENDPOINT_URL, AWS_* variables, ~/.aws).
    endpoint_url: str | None = None
