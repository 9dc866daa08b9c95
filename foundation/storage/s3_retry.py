"""The one retry policy of every S3 request: transient failures retried with jittered exponential backoff
until the request's time budget (`StorageConfig.retry_budget_s`) would be spent.

It runs as botocore's own `needs-retry` hook, inside botocore's request loop, instead of a loop of ours
around each call: boto3's managed transfer makes its requests (each multipart part, the completion, the
abort) itself, and a loop around the transfer could only restart all of it. botocore's built-in retry
modes (standard, adaptive) count attempts, not time, so they stay at one attempt and this hook is the
only retry there is: one budget per request, the same for a PUT, a part, a listing page or a ranged GET.
"""

from __future__ import annotations

import random
import time

from dppp.foundation.storage.config import StorageConfig
from dppp.foundation.storage.s3_errors import is_transient

# botocore is imported inside _failure_of: s3.py (so urls.py, so every URL) imports this module, and a
# file:// run must not pay for it.

_STARTED = "dppp_retry_started"  # in botocore's per-request context, shared by its attempts


class RetryBudgetSpent(Exception):
    """A request still failed transiently when the next wait would overrun its budget. Raised from inside
    botocore's request loop (it has no other way to say why it stopped); S3Storage turns it into
    StorageUnavailable with the operation's name."""

    def __init__(self, attempts: int, elapsed_s: float, failure: BaseException):
        super().__init__(f"{attempts} attempts over {elapsed_s:.1f}s: {type(failure).__name__}")
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.failure = failure


class RetryBudget:
    def __init__(self, config: StorageConfig):
        self.config = config

    def attach(self, client) -> None:
        client.meta.events.register("before-call.s3", self.start)
        client.meta.events.register("needs-retry.s3", self.needs_retry)

    @staticmethod
    def start(context=None, **_) -> None:
        if context is not None:
            context[_STARTED] = time.monotonic()

    def needs_retry(
        self, attempts, response=None, caught_exception=None, request_dict=None, operation=None, **_
    ):
        """botocore's contract: the seconds to wait before the next attempt, or None for no retry."""
        failure = caught_exception if caught_exception is not None else _failure_of(response, operation)
        if failure is None or not is_transient(failure):
            return None  # a success, or a permanent failure: botocore hands it back at once
        cfg = self.config
        context = request_dict["context"] if request_dict is not None else {}
        elapsed = time.monotonic() - context.setdefault(_STARTED, time.monotonic())
        delay = min(cfg.retry_initial_delay_s * 2 ** (attempts - 1), cfg.retry_max_delay_s)
        if elapsed + delay > cfg.retry_budget_s:
            raise RetryBudgetSpent(attempts, elapsed, failure)
        # Jitter spreads the retries of many workers hitting one recovering endpoint.
        return delay * random.uniform(0.5, 1.0)


def _failure_of(response, operation) -> BaseException | None:
    """An error response as the ClientError botocore would raise for it (what is_transient reads)."""
    from botocore.exceptions import ClientError

    if response is None:
        return None
    http, parsed = response
    if http.status_code < 300:
        return None
    return ClientError(parsed, operation.name if operation is not None else "request")
