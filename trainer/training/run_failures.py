"""Which failures inside a Ray Train run end it at once, and how they read on the driver.

Ray Train restarts the worker group after any worker error, up to `max_failures` times (FailureConfig):
right for a lost process or node, useless for damaged data or a bad setting, which fail the same way on
every start (a truncated tar cost 4 starts and 60-90 s before the issue-21 fix). `StopOnUserError`, a
Ray Train callback on its controller, ends the run at the first worker error that is a dppp UserError
(except a storage outage, which a later start may outlive): the controller then raises it, non-retryable.

An error raised in a DataLoader process reaches the training loop re-made by torch, with the whole
traceback as its message ("Caught DamagedDataError in DataLoader worker process 0. Original Traceback
..."); `one_line` gives back the worker's own message, so the user reads one line naming the shard and
the member.
"""

from __future__ import annotations

from collections.abc import Iterator

from ray.exceptions import RayTaskError
from ray.train import UserCallback

from dppp.foundation.errors import UserError
from dppp.foundation.storage.base import StorageUnavailable

_TORCH_WRAPPED = "\nOriginal Traceback (most recent call last):\n"


def one_line(error: UserError) -> UserError:
    """`error` as raised where it happened: torch's DataLoader wrapping (type kept, message replaced by
    its traceback) undone. The traceback ends with 'module.Type: message'."""
    text = str(error)
    if not (text.startswith("Caught ") and _TORCH_WRAPPED in text):
        return error
    kind = type(error)
    label = f"{kind.__module__}.{kind.__qualname__}: "
    tail = text.rsplit(label, 1)
    if len(tail) != 2:
        return error
    clean = kind.__new__(kind)
    clean.__dict__.update(error.__dict__)  # what the type keeps besides its message (ConfigError's path...)
    clean.args = (tail[1].rstrip("\n"),)
    return clean


class StopOnUserError(UserCallback):
    """Ends the run (no worker-group restart) at the first worker error that a restart cannot heal."""

    def after_exception(self, run_context, worker_exceptions) -> None:
        for error in worker_exceptions.values():
            found = user_error(error)
            if found is not None and not isinstance(found, StorageUnavailable):
                raise one_line(found)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it: chained ones, a Ray task's (RayTaskError.cause), each failed
    worker's (WorkerGroupError.worker_failures) and the controller's (ControllerError.controller_failure)."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [
            getattr(current, "cause", None),
            getattr(current, "controller_failure", None),
            current.__cause__,
            current.__context__,
        ]
        todo += list(getattr(current, "worker_failures", {}).values())


def user_error(exc: BaseException) -> UserError | None:
    """The UserError (bad data, bad config) at the root of a Ray Train failure, if that is what it is."""
    for current in causes(exc):
        # A RayTaskError(DataError) is a UserError too, but it reads as Ray's traceback: its `.cause`, the
        # worker's own exception, comes next.
        if isinstance(current, UserError) and not isinstance(current, RayTaskError):
            return one_line(current)
    return None
