"""The storage component's settings: endpoint, region, profile, retries and uploads (never credentials).
The shard member limits that readers add to them are the dataset's (dataset/limits.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dppp.foundation.schema import StrictModel


class StorageConfig(StrictModel):
    # None: boto3's standard resolution (AWS_ENDPOINT_URL, then the AWS default for the region).
    endpoint_url: str | None = None
    region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION / profile, else us-east-1
    profile: str | None = None  # a named profile from ~/.aws; the secrets stay in that file
    # Path-style URLs (http://host/bucket/key) work with MinIO and moto without wildcard DNS.
    addressing_style: Literal["auto", "path", "virtual"] = "path"
    # Total time one request may spend retrying transient errors before giving up.
    retry_budget_s: float = Field(60.0, gt=0)
    retry_initial_delay_s: float = Field(0.2, gt=0)
    retry_max_delay_s: float = Field(5.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)
    # Files above the threshold go up as a multipart upload (S3 publishes it atomically on completion).
    multipart_threshold_mb: int = Field(64, ge=5)
    multipart_chunk_mb: int = Field(16, ge=5)
    # Parts of one multipart upload in flight at once (boto3's managed transfer); at most the client's
    # 16 pooled connections, which the reads and listings of the same process share.
    upload_concurrency: int = Field(8, ge=1, le=16)
