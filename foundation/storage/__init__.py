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

The modules, one concept each:

    config.py      StorageConfig: the endpoint, region, profile, retry and upload settings
    base.py        the interface (Storage), its errors, keys and URL redaction
    urls.py        open_storage / split_url: a URL or path -> the storage it names; the scheme registry
    local.py       LocalStorage: a folder on disk (atomic temp + rename writes)
    s3.py          S3Storage: boto3's managed transfer (atomic single or parallel multipart uploads),
                   paginated listings, conditional writes
    s3_retry.py    the one retry policy: a time budget per request, inside botocore's request loop
    s3_errors.py   which S3 failures are transient, and messages scrubbed of credentials
    s3_reader.py   the streaming S3 reader (read-ahead thread, resumable ranged GETs)
"""
