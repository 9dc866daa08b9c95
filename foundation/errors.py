"""Errors a user can act on. The CLI prints them without a traceback and exits with their code."""

from __future__ import annotations


class ReportedError(Exception):
    """An error whose message says all a user needs: shown as is, no traceback, exit code `exit_code`."""

    exit_code = 1


class UserError(ReportedError):
    """A problem in the user's input (config, URL, data): message shown as is, exit code 2."""

    exit_code = 2


class SettingError(UserError):
    """A wrong or missing value of one setting. `setting` is the library's name for it (an argument such as
    `n`, or a dotted config key); the message starts with it. The CLI names its own flag instead."""

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class CapacityError(ReportedError):
    """The Ray cluster had no room for the job's workers within the configured wait (a node was lost, or
    never there). Not bad input: exit code 1; what was committed or checkpointed stays, a rerun resumes."""


class ConfigError(UserError):
    """A config or taxonomy problem, located by file and dotted path inside it."""

    def __init__(self, problem: str, *, file: str | None = None, path: str | None = None):
        self.problem = problem
        self.file = file
        self.path = path
        where = " ".join(part for part in (file and f"{file}:", path and f"at '{path}':") if part)
        super().__init__(f"{where} {problem}" if where else problem)


class DataError(UserError):
    """Data on storage is missing, corrupted or unsafe (e.g. a dataset with no committed shard)."""


class DamagedDataError(DataError):
    """Data that was written whole is damaged now (a truncated or corrupted tar, a shard's tar missing
    beside its record, an oversized or unsafe member, a garbage index, a member that is not a regular file):
    nothing the user mistyped, so exit code 1; the message names the object and how to repair it. Rerunning
    does not heal it: `dppp train` stops at once instead of restarting its workers."""

    exit_code = 1


class Interrupted(ReportedError):
    """The job stopped on a signal (SIGTERM, SIGINT) with everything it wrote whole and resumable. The
    message is the one line the CLI prints (no "error:", no traceback); exit code 128 + the signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
