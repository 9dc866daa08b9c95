"""`dppp models ...`: build the small offline models that tests and CPU runs load like real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Build tiny offline models (no download) for tests and CPU runs.", no_args_is_help=True)


@app.command("tiny-diffusion")
def tiny_diffusion(
    out_dir: Annotated[Path, typer.Argument(help="Folder to save the pipeline in (save_pretrained format).")],
    seed: Annotated[int, typer.Option(help="Seed of the random initial weights.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty folder.")] = False,
) -> None:
    """Build a tiny, randomly initialised Stable-Diffusion-class pipeline fully offline and save it.

    Load it with `renderer: {kind: diffusers, model: OUT_DIR}` (see configs/tiny-diffusion.yaml).
    """
    from pipeline.renderers.tiny_diffusion import build_tiny_diffusion

    folder = build_tiny_diffusion(out_dir, seed=seed, overwrite=overwrite)
    typer.echo(f"tiny diffusion pipeline saved to {folder}")
