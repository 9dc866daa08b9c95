"""`dppp prompts ...`: sample and summarise prompts from a config (stage 1, before rendering)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Sample attribute-combined prompts and check their coverage.", no_args_is_help=True)
