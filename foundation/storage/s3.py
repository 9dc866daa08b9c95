"""S3 storage (boto3): uploads by boto3's managed transfer (parallel multipart parts, atomic publish),
paginated listings, streaming reads; one time-budgeted retry policy inside botocore's request loop."""

from __future__ import annotations

import io
import os
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from dppp.foundation.errors import UserError
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
from dppp.foundation.storage.s3_retry import RetryBudget, RetryBudgetSpent

# boto3, botocore and pyarrow.fs are imported inside the methods that need them: urls.py imports this module
# for every URL, and a file:// run (the default) must not pay ~100-200 ms for an S3 client it never builds.

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
            client = session.client(
                "s3",
                endpoint_url=self.config.endpoint_url,
                config=Config(
                    # botocore's own retry modes count attempts, not time: they make one attempt here, and
                    # RetryBudget (s3_retry.py) decides every retry from inside botocore's request loop.
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.config.connect_timeout_s,
                    read_timeout=self.config.read_timeout_s,
                    s3={"addressing_style": self.config.addressing_style},
                    max_pool_connections=16,
                ),
            )
            RetryBudget(self.config).attach(client)
            self._client = client
        return self._client

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            # S3 transfer goes multipart from the threshold on; a file of exactly the threshold stays one PUT
            multipart_threshold=(self.config.multipart_threshold_mb << 20) + 1,
            multipart_chunksize=self.config.multipart_chunk_mb << 20,
            max_concurrency=self.config.upload_concurrency,
            # the classic transfer manager sends through this client, so through its retry budget; the
            # CRT one (chosen by itself on some instance types) has its own client and retries
            preferred_transfer_client="classic",
        )

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

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run `call` (any number of client requests, each retried by RetryBudget within its budget) and turn
        what fails into a StorageError that names `what`: StorageUnavailable once a request spent its budget."""
        from boto3.exceptions import S3UploadFailedError

        try:
            return call()
        except RetryBudgetSpent as spent:
            raise StorageUnavailable(
                f"{what}: S3 endpoint {self.endpoint} still failing after {spent.attempts} attempts over "
                f"{spent.elapsed_s:.1f}s (retry budget {self.config.retry_budget_s:g}s): "
                f"{scrub(f'{type(spent.failure).__name__}: {spent.failure}')}"
            ) from None
        except Exception as exc:
            # the managed upload wraps the request's ClientError in a message; the code is what we read
            if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
                exc = exc.__context__
            if is_transient(exc):  # transient, yet not from a request RetryBudget saw (none known)
                raise StorageUnavailable(
                    f"{what}: S3 endpoint {self.endpoint}: {scrub(f'{type(exc).__name__}: {exc}')}"
                ) from None
            raise self._permanent_error(exc, what) from None

    def put_bytes(self, data, key):
        obj = self._obj(key)
        self._call(
            f"cannot write {self.url_for(key)}",
            lambda: self.client.put_object(Bucket=self.bucket, Key=obj, Body=data),
        )

    def put_file(self, local_path, key, *, progress=None):
        """boto3's managed transfer: one PUT up to the threshold, else a multipart upload whose parts go up
        `upload_concurrency` at a time; S3 shows the object only once CompleteMultipartUpload made it whole,
        and a failed transfer aborts the upload (bucket lifecycle rules clean up what an abort cannot reach)."""
        obj = self._obj(key)
        callback = None
        if progress:
            lock = threading.Lock()

            def callback(sent: int) -> None:  # from the transfer's threads, one part each
                with lock:
                    progress(sent)

        self._call(
            f"cannot write {self.url_for(key)}",
            lambda: self.client.upload_file(
                os.fspath(local_path), self.bucket, obj, Callback=callback, Config=self._transfer_config()
            ),
        )

    def check_writable(self):
        probe = self._obj(f".dppp-write-check-{uuid.uuid4().hex[:12]}")
        what = f"cannot write to {self.url}"
        self._call(what, lambda: self.client.put_object(Bucket=self.bucket, Key=probe, Body=b""))
        self._call(what, lambda: self.client.delete_object(Bucket=self.bucket, Key=probe))

    def open_read(self, key):
        reader = S3Reader(
            self.url_for(key), lambda start, etag: self._get(key, start, etag), self.config.retry_budget_s
        )
        return io.BufferedReader(reader, buffer_size=1 << 20)

    def _get(self, key: str, start: int, etag: str | None):
        obj = self._obj(key)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": obj}
        if start:
            args["Range"] = f"bytes={start}-"
        if etag:
            args["IfMatch"] = etag  # a resumed read must not splice two versions of the object
        return self._call(f"cannot read {self.url_for(key)}", lambda: self.client.get_object(**args))

    ranged_listing = True

    def list(self, prefix=""):
        return list(self.iter_list(prefix))  # S3 lists in key order

    # the most keys one listing request returns (S3's own maximum is 1,000); tests page smaller
    list_page_size = 1000

    def iter_list(self, prefix="", *, after=None):
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
        if after is not None:
            args["StartAfter"] = f"{self.prefix}/{after}" if self.prefix else after
        args["PaginationConfig"] = {"PageSize": self.list_page_size}
        what = f"cannot list {self.url}"
        # lazy: no request yet; in _call for what building the client may raise (an unknown profile)
        pages = self._call(what, lambda: iter(self.client.get_paginator("list_objects_v2").paginate(**args)))
        while True:  # one page at a time, as they come: each page's request is one _call
            page = self._call(what, lambda: next(pages, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][strip:], item["Size"])

    def stat(self, key):
        obj = self._obj(key)
        try:
            head = self._call(
                f"cannot stat {self.url_for(key)}",
                lambda: self.client.head_object(Bucket=self.bucket, Key=obj),
            )
        except ObjectNotFound:
            return None
        return ObjectInfo(key, head["ContentLength"])

    def delete(self, key):
        obj = self._obj(key)
        self._call(
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

        # put_object, not the managed transfer: its uploads take no If-None-Match / If-Match
        result = self._call(what, attempt)
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


def open_s3_url(rest: str, url: str, config: StorageConfig) -> S3Storage:
    """s3://bucket[/prefix]: the storage under that prefix. Credentials in the URL are refused unread."""
    scheme = url.split("://", 1)[0].lower()
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
