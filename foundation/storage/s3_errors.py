"""S3 failures: which ones are transient (retried), and messages scrubbed of any credential."""

from __future__ import annotations

import os

from dppp.foundation.storage.base import redact_url

# botocore and urllib3 are imported inside is_transient: s3.py (so urls.py, so every URL) imports this
# module, and a file:// run must not pay for them.

_THROTTLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "SlowDown",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
}


def is_transient(exc: BaseException) -> bool:
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


def scrub(text: str) -> str:
    """Remove any credential value the process knows of from a message (defence in depth)."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return redact_url(text)
