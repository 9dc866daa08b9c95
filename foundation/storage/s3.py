"""S3 storage (boto3): bounded retries with backoff, atomic single or multipart uploads, streaming reads."""

from __future__ import annotations

import io
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from dppp.foundation.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    StorageUnavailable,
    check_key,
    check_prefix,
    redact_url,
)
from dppp.foundation.storage.config import StorageConfig
from dppp.foundation.storage.s3_errors import is_transient, scrub
from dppp.foundation.storage.s3_reader import S3Reader

T = TypeVar("T")

# What boto3 and pyarrow read from the environment to find the endpoint and the region: settings, not
# secrets, so they may travel to the actors in Ray's runtime_env, which Ray writes to its logs in plain text
# (logs/runtime_env_agent.log) and shows in its dashboard. Credentials never travel: a local Ray instance
# inherits them from the driver that starts it, a cluster's nodes have their own (environment, instance
# role, Kubernetes secret; docs/cluster.md). Nor do a profile or a config file's path, which name places on
# the driver's machine.
WORKER_ENV = frozenset({"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION"})


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str, config: StorageConfig):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.config = config
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = None

    # boto3 clients do not pickle: Ray ships the storage to workers and each one builds its own client.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(profile_name=self.config.profile, region_name=self.config.region)
            self._client = session.client(
                "s3",
                endpoint_url=self.config.endpoint_url,
                config=Config(
                    # Retries are ours (bounded total time), so botocore makes one attempt per call.
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.config.connect_timeout_s,
                    read_timeout=self.config.read_timeout_s,
                    s3={"addressing_style": self.config.addressing_style},
                    max_pool_connections=16,
                ),
            )
        return self._client

    @property
    def endpoint(self) -> str:
        try:
            return redact_url(self.client.meta.endpoint_url)
        except Exception:  # no region / bad profile: the caller's message says so
            return self.config.endpoint_url or "the default AWS endpoint"

    def arrow_filesystem(self):
        """pyarrow's S3FileSystem on the same endpoint, region and addressing as boto3 here. Credentials:
        pyarrow reads the same AWS_* variables / profile chain as boto3; none pass through here."""
        import pyarrow.fs

        endpoint = (
            self.config.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        options: dict[str, Any] = {
            "region": self.config.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        }
        if endpoint:
            parsed = urlparse(endpoint)
            options["endpoint_override"] = parsed.netloc or parsed.path
            options["scheme"] = parsed.scheme or "https"
        if self.config.addressing_style == "virtual":
            options["force_virtual_addressing"] = True
        path = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return pyarrow.fs.S3FileSystem(**options), path

    def worker_env(self) -> dict[str, str]:
        # The driver's endpoint and region reach a worker even when the Ray instance was started before
        # they were set. redact_url: an endpoint written with user:password@ keeps them to itself.
        return {key: redact_url(value) for key, value in os.environ.items() if key in WORKER_ENV}

    def _obj(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _permanent_error(self, exc: BaseException, what: str) -> StorageError:
        from botocore.exceptions import (
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
        )

        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(
                f"{what}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE / storage.profile)"
            )
        if isinstance(exc, ProfileNotFound):
            return StorageError(f"{what}: AWS profile {self.config.profile!r} not found")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StorageError(f"{what}: bucket '{self.bucket}' does not exist at {self.endpoint}")
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(f"{what}: no such object")
            if (
                code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")
                or status == 403
            ):
                return StorageError(
                    f"{what}: access denied ({code}) at {self.endpoint}; check the credentials in the "
                    "environment or profile and the bucket policy"
                )
            return StorageError(f"{what}: {code or status}: {scrub(str(exc))}")
        return StorageError(f"{what}: {scrub(f'{type(exc).__name__}: {exc}')}")

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """Run `call`, retrying transient failures with exponential backoff until the budget is spent."""
        cfg = self.config
        start = time.monotonic()
        delay = cfg.retry_initial_delay_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except Exception as exc:
                if not is_transient(exc):
                    raise self._permanent_error(exc, what) from None
                elapsed = time.monotonic() - start
                if elapsed + delay > cfg.retry_budget_s:
                    raise StorageUnavailable(
                        f"{what}: S3 endpoint {self.endpoint} still failing after {attempt} attempts over "
                        f"{elapsed:.1f}s (retry budget {cfg.retry_budget_s:g}s): "
                        f"{scrub(f'{type(exc).__name__}: {exc}')}"
                    ) from None
                # Jitter spreads the retries of many workers hitting one recovering endpoint.
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, cfg.retry_max_delay_s)

    def put_bytes(self, data, key):
        obj = self._obj(key)
        self._retry(
            f"cannot write {self.url_for(key)}",
            lambda: self.client.put_object(Bucket=self.bucket, Key=obj, Body=data),
        )

    def put_file(self, local_path, key, *, progress=None):
        size = os.path.getsize(local_path)
        if size <= self.config.multipart_threshold_mb << 20:
            # One PUT: S3 makes the object visible only once it is whole.
            with open(local_path, "rb") as src:
                data = src.read()
            self.put_bytes(data, key)
            if progress:
                progress(size)
            return
        self._put_multipart(local_path, key, size, progress)

    def _put_multipart(self, local_path, key, size, progress) -> None:
        obj = self._obj(key)
        what = f"cannot write {self.url_for(key)}"
        upload_id = self._retry(
            what, lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=obj)["UploadId"]
        )
        chunk = self.config.multipart_chunk_mb << 20
        parts = []
        try:
            with open(local_path, "rb") as src:
                for number, offset in enumerate(range(0, size, chunk), start=1):
                    src.seek(offset)
                    body = src.read(chunk)

                    def upload(body=body, number=number):
                        return self.client.upload_part(
                            Bucket=self.bucket, Key=obj, UploadId=upload_id, PartNumber=number, Body=body
                        )["ETag"]

                    parts.append(
                        {"PartNumber": number, "ETag": self._retry(f"{what} (part {number})", upload)}
                    )
                    if progress:
                        progress(len(body))
            # Completion is the atomic publish: until then no reader sees the key.
            self._retry(
                what,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=obj, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            try:  # best effort: bucket lifecycle rules clean up what this cannot reach
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
            except Exception:
                pass
            raise

    def check_writable(self):
        probe = self._obj(f".dppp-write-check-{uuid.uuid4().hex[:12]}")
        what = f"cannot write to {self.url}"
        self._retry(what, lambda: self.client.put_object(Bucket=self.bucket, Key=probe, Body=b""))
        self._retry(what, lambda: self.client.delete_object(Bucket=self.bucket, Key=probe))

    def open_read(self, key):
        return io.BufferedReader(S3Reader(self, key), buffer_size=1 << 20)

    def _get(self, key: str, start: int, etag: str | None):
        obj = self._obj(key)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": obj}
        if start:
            args["Range"] = f"bytes={start}-"
        if etag:
            args["IfMatch"] = etag  # a resumed read must not splice two versions of the object
        return self._retry(f"cannot read {self.url_for(key)}", lambda: self.client.get_object(**args))

    ranged_listing = True

    def list(self, prefix=""):
        return list(self.iter_list(prefix))  # S3 lists in key order

    def iter_list(self, prefix="", *, after=None):
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
        if after is not None:
            args["StartAfter"] = f"{self.prefix}/{after}" if self.prefix else after
        while True:
            page = self._retry(
                f"cannot list {self.url}", lambda args=args: self.client.list_objects_v2(**args)
            )
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][strip:], item["Size"])
            if not page.get("IsTruncated"):
                return
            args = {"Bucket": self.bucket, "Prefix": full, "ContinuationToken": page["NextContinuationToken"]}

    def stat(self, key):
        obj = self._obj(key)
        try:
            head = self._retry(
                f"cannot stat {self.url_for(key)}",
                lambda: self.client.head_object(Bucket=self.bucket, Key=obj),
            )
        except ObjectNotFound:
            return None
        return ObjectInfo(key, head["ContentLength"])

    def delete(self, key):
        obj = self._obj(key)
        self._retry(
            f"cannot delete {self.url_for(key)}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=obj),
        )

    # ---- conditional writes: S3's If-None-Match / If-Match on PUT and DELETE (AWS since 2024, MinIO,
    # moto). A lost precondition is an answer (412, or 409 while another conditional write is under way).

    def _conditional(self, what: str, call: Callable[[], T]) -> T | None:
        from botocore.exceptions import ClientError

        def attempt():
            try:
                return call()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _LOST_PRECONDITION:
                    return _LOST
                raise

        result = self._retry(what, attempt)
        return None if result is _LOST else result

    def create_bytes(self, data, key):
        obj = self._obj(key)
        answer = self._conditional(
            f"cannot write {self.url_for(key)}",
            lambda: self.client.put_object(Bucket=self.bucket, Key=obj, Body=data, IfNoneMatch="*"),
        )
        return None if answer is None else answer["ETag"]

    def read_versioned(self, key):
        try:
            answer = self._get(key, 0, None)
            return answer["Body"].read(), answer["ETag"]
        except ObjectNotFound:
            return None

    def replace_bytes_if(self, data, key, version):
        obj = self._obj(key)
        answer = self._conditional(
            f"cannot write {self.url_for(key)}",
            lambda: self.client.put_object(Bucket=self.bucket, Key=obj, Body=data, IfMatch=version),
        )
        return None if answer is None else answer["ETag"]

    def delete_if(self, key, version):
        obj = self._obj(key)
        answer = self._conditional(
            f"cannot delete {self.url_for(key)}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=obj, IfMatch=version),
        )
        return answer is not None


# and NoSuchKey: an If-Match on an object that went away
_LOST_PRECONDITION = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
_LOST = object()
