"""Errors a user can fix. The CLI prints them without a traceback and exits with their code."""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input (config, URL, data): message shown as is, exit code 2."""

    exit_code = 2


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
