"""Object storage: one small interface, two implementations (local path / file:// and s3:// via boto3).

    storage = open_storage("s3://bucket/datasets/demo")     # or "runs/demo/dataset", "file:///data/x"
    storage.put_file("/tmp/shard.tar", "shards/shard-000000.tar")   # atomic: whole object or nothing
    with storage.open_read("shards/shard-000000.tar") as f: ...       # streaming, never a full download

Keys are relative and '/'-separated. Credentials never live in `StorageConfig`: boto3's standard chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, ~/.aws, instance roles) finds
them, and the endpoint comes from the config or AWS_ENDPOINT_URL, so MinIO and any S3-compatible store work
unchanged. Transient S3 failures (connection refused/reset, timeouts, 5xx, throttling) are retried with
exponential backoff inside a bounded time budget per request; permanent ones fail at once with a message
that names the bucket and the likely fix, and never a credential.
"""

from __future__ import annotations

import io
import os
import queue
import random
import re
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pydantic import Field

from dppp.errors import DataError, UserError
from dppp.schema import StrictModel

T = TypeVar("T")

# Local atomic writes go to a hidden sibling with this marker, then os.replace() onto the final name.
TEMP_MARKER = ".tmp-"


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


class StorageError(DataError):
    """A storage operation failed for a reason the user must fix (missing bucket, access denied...)."""


class ObjectNotFound(StorageError):
    """The key does not exist."""


class StorageUnavailable(StorageError):
    """Transient failures outlasted the retry budget (endpoint down, throttled, 5xx)."""


@dataclass(frozen=True, order=True)
class ObjectInfo:
    key: str
    size: int


def redact_url(url: str) -> str:
    """Drop any user:password@ part of a URL, so an endpoint can be shown in messages and records."""
    return re.sub(r"(^[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@", r"\1", url)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str) -> str:
    """A storage key: relative, '/'-separated, no empty, '.' or '..' parts, no control characters."""
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    # a regex, not a generator per character: every read and write of 100k-shard datasets checks keys
    if key.startswith("/") or "\\" in key or _UNPRINTABLE.search(key):
        raise ValueError(f"invalid storage key {key!r}: must be relative, '/'-separated, printable")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}: empty, '.' or '..' path component")
    return key


def _check_prefix(prefix: str) -> str:
    if prefix and any(part in (".", "..") for part in prefix.split("/")):
        raise ValueError(f"invalid storage prefix {prefix!r}")
    return prefix


class Storage(ABC):
    """A dataset root on some object store. Keys are relative to `url`."""

    url: str

    @abstractmethod
    def put_file(self, local_path: str | os.PathLike, key: str, *, progress: Callable[[int], None] | None = None) -> None:
        """Publish a local file atomically: readers see the old object or the whole new one, never a part.
        `progress(n)` is called with the number of bytes sent since the last call."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> None:
        """Publish bytes atomically."""

    @abstractmethod
    def open_read(self, key: str) -> IO[bytes]:
        """A streaming binary reader (a context manager); raises ObjectNotFound."""

    # Whether a listing that starts part-way (`iter_list(after=...)`) costs only its part: then listing a
    # large dataset in key ranges on several threads pays (S3: one round trip per 1,000 keys).
    ranged_listing = False

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    def iter_list(self, prefix: str = "", *, after: str | None = None) -> Iterator[ObjectInfo]:
        """The objects whose key starts with `prefix` and sorts after `after`, in key order, as they come."""
        return (obj for obj in self.list(prefix) if after is None or obj.key > after)

    def walk(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The objects whose key starts with `prefix`, in no particular order, as they come: for a caller
        that needs no order, without the whole listing held (and sorted) at once."""
        return self.iter_list(prefix)

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size of one object, or None when it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as stream:
            return stream.read()

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def url_for(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{check_key(key)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# --------------------------------------------------------------------------------------------- local


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _atomic_write(self, key: str, write: Callable[[IO[bytes]], None]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
        try:
            with open(temp, "wb") as out:
                write(out)
                out.flush()
                # The commit marker is written after this: the data must be durable before it.
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def put_file(self, local_path, key, *, progress=None):
        def copy(out: IO[bytes]) -> None:
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            if progress:
                progress(out.tell())

        self._atomic_write(key, copy)

    def put_bytes(self, data, key):
        self._atomic_write(key, lambda out: out.write(data))

    def open_read(self, key):
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no such object: {self.url_for(key)}") from None

    def list(self, prefix=""):
        return sorted(self.walk(prefix))

    def walk(self, prefix=""):
        _check_prefix(prefix)
        # Walk only the directory the prefix lies in, not the whole tree; os.scandir, not Path objects:
        # a dataset of 100k shards has 300k files here.
        base = os.path.join(self.root, prefix.rsplit("/", 1)[0]) if "/" in prefix else str(self.root)
        skip = len(str(self.root).rstrip(os.sep)) + 1
        pending = [base]
        while pending:
            try:
                entries = os.scandir(pending.pop())
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        continue
                    key = entry.path[skip:].replace(os.sep, "/")
                    if key.startswith(prefix):
                        try:
                            yield ObjectInfo(key, entry.stat().st_size)
                        except FileNotFoundError:  # removed while we walked
                            pass

    def stat(self, key):
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size) if not os.path.isdir(self._path(key)) else None

    def delete(self, key):
        self._path(key).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ s3

_THROTTLE_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException", "SlowDown",
    "TooManyRequestsException", "RequestLimitExceeded", "ProvisionedThroughputExceededException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
}  # fmt: skip


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, SSLError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, SSLError):  # a certificate problem does not heal by waiting
        return False
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or status == 429 or code in _THROTTLE_CODES
    return isinstance(
        exc, (HTTPClientError, BotoConnectionError, IncompleteReadError, Urllib3Error, ConnectionError)
    )


def _scrub(text: str) -> str:
    """Remove any credential value the process knows of from a message (defence in depth)."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return redact_url(text)


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
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
                return StorageError(
                    f"{what}: access denied ({code}) at {self.endpoint}; check the credentials in the "
                    "environment or profile and the bucket policy"
                )
            return StorageError(f"{what}: {code or status}: {_scrub(str(exc))}")
        return StorageError(f"{what}: {_scrub(f'{type(exc).__name__}: {exc}')}")

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
                if not _is_transient(exc):
                    raise self._permanent_error(exc, what) from None
                elapsed = time.monotonic() - start
                if elapsed + delay > cfg.retry_budget_s:
                    raise StorageUnavailable(
                        f"{what}: S3 endpoint {self.endpoint} still failing after {attempt} attempts over "
                        f"{elapsed:.1f}s (retry budget {cfg.retry_budget_s:g}s): "
                        f"{_scrub(f'{type(exc).__name__}: {exc}')}"
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

                    parts.append({"PartNumber": number, "ETag": self._retry(f"{what} (part {number})", upload)})
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

    def open_read(self, key):
        return io.BufferedReader(_S3Reader(self, key), buffer_size=1 << 20)

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
        _check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
        if after is not None:
            args["StartAfter"] = f"{self.prefix}/{after}" if self.prefix else after
        while True:
            page = self._retry(f"cannot list {self.url}", lambda args=args: self.client.list_objects_v2(**args))
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][strip:], item["Size"])
            if not page.get("IsTruncated"):
                return
            args = {"Bucket": self.bucket, "Prefix": full, "ContinuationToken": page["NextContinuationToken"]}

    def stat(self, key):
        obj = self._obj(key)
        try:
            head = self._retry(
                f"cannot stat {self.url_for(key)}", lambda: self.client.head_object(Bucket=self.bucket, Key=obj)
            )
        except ObjectNotFound:
            return None
        return ObjectInfo(key, head["ContentLength"])

    def delete(self, key):
        obj = self._obj(key)
        self._retry(
            f"cannot delete {self.url_for(key)}", lambda: self.client.delete_object(Bucket=self.bucket, Key=obj)
        )


class _Fetcher:
    """The network side of an S3 read, run by the read-ahead thread. It holds no reference to the reader,
    so an abandoned reader is garbage-collected, and its close() stops this thread."""

    CHUNK = 1 << 20

    def __init__(self, storage: S3Storage, key: str, response, prefetch: int):
        self.storage = storage
        self.key = key
        self.name = storage.url_for(key)
        self.etag = response.get("ETag")
        self.body = response["Body"]
        self.fetched = 0  # bytes pulled from the network
        self.queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()

    def read_chunk(self) -> bytes:
        deadline = time.monotonic() + self.storage.config.retry_budget_s
        while True:
            try:
                data = self.body.read(self.CHUNK)
                self.fetched += len(data)
                return data
            except Exception as exc:
                if self.stop.is_set() or not _is_transient(exc) or time.monotonic() > deadline:
                    raise StorageUnavailable(
                        f"cannot read {self.name} at byte {self.fetched}: {_scrub(f'{type(exc).__name__}: {exc}')}"
                    ) from None
                self.close_body()
                # Resume where the connection dropped, and only from the same version of the object.
                self.body = self.storage._get(self.key, self.fetched, self.etag)["Body"]

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.read_chunk()
                self.put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading thread, which raises it
            self.put(exc)

    def put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close_body(self) -> None:
        try:
            self.body.close()
        except Exception:
            pass


class _S3Reader(io.RawIOBase):
    """A streaming GET, read ahead by a background thread so the network overlaps the caller's parsing.

    At most `prefetch` chunks of 1 MiB wait in memory. A dropped connection resumes with a Range request
    pinned to the ETag (never splicing two versions of an object), within the retry budget."""

    def __init__(self, storage: S3Storage, key: str, prefetch: int = 4):
        self.name = storage.url_for(key)  # what error messages call this stream
        self.pos = 0  # bytes handed to the caller
        response = storage._get(key, 0, None)  # synchronous: a missing object fails at open
        self.size = response.get("ContentLength")
        self._fetcher = _Fetcher(storage, key, response, prefetch)
        self._current = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._fetcher.run, name=f"s3-read {key}", daemon=True)
        self._thread.start()

    @property
    def _fetched(self) -> int:
        return self._fetcher.fetched

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._current:
            if self._eof:
                return 0
            item = self._fetcher.queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
                return 0
            self._current = memoryview(item)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._fetcher.stop.set()
            self._fetcher.close_body()  # unblocks a read in flight in the read-ahead thread
            self._thread.join(timeout=5)
        super().close()


# ------------------------------------------------------------------------------------------- opening


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
                raise UserError(f"file URL {url!r} names host {host!r}: use file:///absolute/path")
            rest = rest[len("localhost") :]
        from urllib.parse import unquote

        return LocalStorage(unquote(rest) or "/")
    if scheme in ("s3", "s3a"):
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UserError(f"S3 URL {redact_url(url)!r} has no bucket: expected s3://bucket/prefix")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,62}", bucket):
            raise UserError(f"S3 URL {redact_url(url)!r}: {bucket!r} is not a valid bucket name")
        try:
            _check_prefix(prefix.strip("/"))
        except ValueError as exc:
            raise UserError(f"S3 URL {redact_url(url)!r}: {exc}") from None
        return S3Storage(bucket, prefix, config)
    raise UserError(f"unsupported storage URL scheme '{scheme}://' in {redact_url(url)!r}: use a local path, file:// or s3://")


def split_url(url: str, config: StorageConfig | None = None) -> tuple[Storage, str]:
    """The storage holding one object and the object's key: 's3://b/ds/shards/x.tar' -> (s3://b/ds/shards, 'x.tar')."""
    stripped = url.rstrip("/")
    head, sep, name = stripped.rpartition("/")
    if not sep or not name:
        return open_storage(".", config), check_key(stripped)
    if head.endswith(":/") or head.endswith(":"):  # "s3://bucket" alone: no object named
        raise UserError(f"{redact_url(url)!r} names a bucket, not an object")
    return open_storage(head or "/", config), name
