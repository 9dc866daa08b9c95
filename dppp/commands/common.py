"""Options shared by every command that reads an experiment config, and how the CLI words a reported error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from foundation.errors import ReportedError, SettingError

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment YAML (sections: generate, pretrain, train, eval).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config value: dotted.key=value (repeatable), e.g. generate.seed=3."
    ),
]


def load_config(config: Path, sets: list[str] | None):
    from dppp.config import load_experiment

    return load_experiment(config, sets or [])


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
FLAGS = {"n": "--n", "plot": "--plot", "overwrite": "--overwrite", "data": "--data", "datasets": "--dataset"}


def error_message(exc: ReportedError) -> str:
    """What the CLI prints for `exc`: a setting the user sets by a flag is named by that flag."""
    if isinstance(exc, SettingError) and exc.setting in FLAGS:
        return f"{FLAGS[exc.setting]}: {exc.problem}"
    return str(exc)
