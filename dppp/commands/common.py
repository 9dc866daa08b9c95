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

