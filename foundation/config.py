"""Reading and validating config files, shared by every component: YAML with errors that name the file,
`--set dotted.key=value` overrides applied to the raw YAML (so an override is checked exactly like a value
written in the file), and pydantic errors turned into one ConfigError listing every problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dppp.foundation.errors import ConfigError
from dppp.foundation.schema import StrictModel


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, turning a missing file or a syntax error into a ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=str(path)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str], *, file: str | None = None) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested dict, returning a new dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"an override must be dotted.key=value, got {item!r}", file=file)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: '{'.'.join(parts[: i + 1])}' is not a section", file=file)
            node = child
        node[parts[-1]] = value
    return data


def format_validation_error(exc: ValidationError, *, file: str | None, prefix: str = "") -> ConfigError:
    """One ConfigError listing every problem with its dotted path, in the order pydantic found them."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"at '{path}': {msg}" if path else msg)
    first, rest = lines[0], lines[1:]
    problem = first if not rest else first + "".join(f"\n  {line}" for line in rest)
    where = f"{file}: " if file else ""
    error = ConfigError(problem)
    error.args = (f"{where}{problem}",)
    error.file = file
    return error


def validate(model: type[StrictModel], data: Any, *, file: str | None = None, prefix: str = "") -> Any:
    """Validate raw data against a config model; every problem becomes one ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", file=file, path=prefix or None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, file=file, prefix=prefix) from None


def with_updates(section: StrictModel, prefix: str, **updates: Any) -> Any:
    """The section with programmatic overrides applied (None = not given), validated like the file."""
    given = {key: value for key, value in updates.items() if value is not None}
    if not given:
        return section
    return validate(type(section), {**section.model_dump(), **given}, prefix=prefix)
