"""`dppp prompts ...`: sample and summarise prompts from a config (stage 1, before rendering)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dppp.commands.common import ConfigArg, SetOption, load_config
from dppp.dataset.keys import view_record

# Only what `dppp --help` loads anyway is imported at the top: the library modules a command calls (pydantic
# configs, numpy, pyarrow, torch, ray, even rich.progress and the storage helpers) are imported inside it,
# so `dppp --help` and a bad flag stay fast.

app = typer.Typer(help="Sample attribute-combined prompts and check their coverage.", no_args_is_help=True)

IdentitiesOption = Annotated[
    int | None,
    typer.Option("--identities", min=1, help="Number of identities (overrides generate.identities)."),
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", min=0, help="Global seed (overrides generate.seed).")
]


def _overrides(sets: list[str] | None, identities: int | None, seed: int | None) -> list[str]:
    """--identities / --seed are shorthands for --set, validated like a value in the file."""
    overrides = list(sets or [])
    if identities is not None:
        overrides.append(f"generate.identities={identities}")
    if seed is not None:
        overrides.append(f"generate.seed={seed}")
    return overrides


@app.command()
def sample(
    config: ConfigArg, identities: IdentitiesOption = None, seed: SeedOption = None, sets: SetOption = None
) -> None:
    """Print every view of every identity as JSON lines: key, pid, view, camid, prompt, negative_prompt,
    attributes, seeds and the slots dropped to fit the token budget."""
    from dppp.pipeline.prompting import prompt_engine
    from dppp.prompts.report import write_samples

    generate = load_config(config, _overrides(sets, identities, seed)).generate
    # The engine validates everything (taxonomy, templates, identity count) before the first line.
    write_samples(
        prompt_engine(generate, config_file=str(config)), generate.identities, sys.stdout, record=view_record
    )


@app.command()
def stats(
    config: ConfigArg,
    identities: IdentitiesOption = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the coverage as a bar chart (PNG).")
    ] = None,
    sets: SetOption = None,
) -> None:
    """How often every attribute value is sampled (identity values per identity, view values per view)."""
    from dppp.pipeline.prompting import prompt_engine
    from dppp.prompts.report import coverage_report

    generate = load_config(config, _overrides(sets, identities, None)).generate
    coverage_report(
        prompt_engine(generate, config_file=str(config)), generate.identities, Console(), plot=plot
    )
