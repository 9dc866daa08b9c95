"""Options shared by every command that reads an experiment config, and how the CLI words a reported error.

One vocabulary across commands: CONFIG is always a positional argument (the experiment YAML), data to
read is always `--data` (repeatable), `--out` where results go, `--endpoint-url` the S3 endpoint of
whatever the command reads or writes, `--progress-every SECONDS` the progress lines of a batch job, sizes
in binary units (KiB, MiB, GiB: foundation/units.py). Older spellings stay as hidden aliases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dppp.foundation.errors import ReportedError, SettingError

# dppp.config (every section's pydantic model, numpy, yaml) and the redaction patterns are imported inside
# the functions that use them: `dppp --help` must not pay for them.

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment YAML (sections: generate, pretrain, train, eval).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config value: dotted.key=value (repeatable), e.g. generate.seed=3."
    ),
]


EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help="S3 endpoint (MinIO...) of s3:// URLs. Default: the config's storage.endpoint_url, "
        "AWS_ENDPOINT_URL, or AWS itself.",
    ),
]


def load_config(
    config: Path | None,
    sets: list[str] | None,
    *,
    endpoint_url: str | None = None,
    storage: tuple[str, ...] = (),
):
    """The experiment config with `--set` overrides; `--endpoint-url` sets `<section>.storage.endpoint_url`
    of each `storage` section given (a --set of the same key wins). CONFIG None: the built-in defaults."""
    from dppp.config import load_experiment

    endpoint = [f"{section}.endpoint_url={endpoint_url}" for section in storage] if endpoint_url else []
    return load_experiment(config, [*endpoint, *(sets or [])])


OutOption = Annotated[
    str | None, typer.Option(help="Runs root (local or s3://); the run goes to OUT/RUN_NAME.")
]
RayAddressOption = Annotated[
    str | None, typer.Option(help="Join this Ray cluster (default: RAY_ADDRESS, else a local instance).")
]

ProgressEveryOption = Annotated[
    float | None,
    typer.Option(
        "--progress-every",
        metavar="SECONDS",
        help="When stdout is not a terminal (a log): a progress line every SECONDS "
        "(default: DPPP_PROGRESS_EVERY, else 30; 0: none).",
    ),
]

WorkersOption = Annotated[
    int | None, typer.Option(help="Ray Train workers (default: the config section's workers).")
]


# The flag of each library setting a SettingError may name (dotted config keys are named as they are).
FLAGS = {
    "n": "--n",
    "plot": "--plot",
    "out": "--out",
    "overwrite": "--overwrite",
    "data": "--data",
    "datasets": "--data",
    "member_limit": "--member-limit",
}


def error_message(exc: ReportedError) -> str:
    """What the CLI prints for `exc`: a setting the user sets by a flag is named by that flag; no
    credential, whole or as a URL's part, whatever the message quotes (dppp.foundation.redaction)."""
    from dppp.foundation.redaction import redact_message

    if isinstance(exc, SettingError) and exc.setting in FLAGS:
        return redact_message(f"{FLAGS[exc.setting]}: {exc.problem}")
    return redact_message(str(exc))
