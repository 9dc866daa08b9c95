"""Options shared by every command that reads an experiment config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML (sections: generate, pretrain, train, eval).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: dotted.key=value (repeatable), e.g. generate.seed=3."),
]


def load_config(config: Path, sets: list[str] | None):
    from dppp.config import load_experiment

    return load_experiment(config, sets or [])

OutOption = Annotated[str | None, typer.Option(help="Runs root (local or s3://); the run goes to OUT/RUN_NAME.")]
RayAddressOption = Annotated[
    str | None, typer.Option(help="Join this Ray cluster (default: RAY_ADDRESS, else a local instance).")
]

WorkersOption = Annotated[int | None, typer.Option(help="Ray Train workers (default: the config section's workers).")]
