"""The `dppp` command: a thin typer shell. Every command calls one library function tests can call too.

Command modules live in dppp/commands/ and import the library modules they call (pydantic configs, numpy,
pyarrow, torch, ray) inside the command, so `dppp --help` and a bad flag stay fast.
"""

from __future__ import annotations

import sys

import typer

from dppp.commands import curate, evaluate, generate, models, pretrain, prompts, shards, train
from dppp.commands.common import error_message
from dppp.foundation.errors import Interrupted, ReportedError

app = typer.Typer(
    name="dppp",
    help="Privacy-preserving synthetic person re-ID: generate a prompt-driven dataset, inspect its shards, "
    "train PDM on it, evaluate on real benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(prompts.app, name="prompts")
app.add_typer(models.app, name="models")
app.add_typer(shards.app, name="shards")
app.command("generate")(generate.generate)
app.command("curate")(curate.curate)
app.command("pretrain")(pretrain.pretrain)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user errors print one clear message (no traceback), exit 2;
    a cluster without room for the job, likewise, exit 1; a job stopped by SIGTERM / SIGINT prints its
    one "stopped: ..." line, exit 143 / 130 (foundation/graceful_stop.py)."""
    try:
        app(args=argv, prog_name="dppp")
    except SystemExit as exc:  # typer's standalone mode reports usage errors and --help this way
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except Interrupted as exc:  # stopped on a signal: its one line says where, and how to go on
        typer.echo(str(exc), err=True)
        return exc.exit_code
    except ReportedError as exc:
        typer.secho(f"error: {error_message(exc)}", fg="red", err=True)
        return exc.exit_code
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
