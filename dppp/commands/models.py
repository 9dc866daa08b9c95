"""`dppp models ...`: build the small offline models that tests and CPU runs load like real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dppp.foundation.errors import UserError

# Only what `dppp --help` loads anyway is imported at the top: the library modules a command calls (pydantic
# configs, numpy, pyarrow, torch, ray, even rich.progress and the storage helpers) are imported inside it,
# so `dppp --help` and a bad flag stay fast.

app = typer.Typer(
    help="Build tiny offline models (no download) for tests and CPU runs.", no_args_is_help=True
)


@app.command("tiny-diffusion")
def tiny_diffusion(
    out_dir: Annotated[Path, typer.Argument(help="Folder to save the pipeline in (save_pretrained format).")],
    seed: Annotated[int, typer.Option(help="Seed of the random initial weights.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing non-empty folder.")
    ] = False,
) -> None:
    """Build a tiny, randomly initialised Stable-Diffusion-class pipeline fully offline and save it.

    Load it with `renderer: {kind: diffusers, model: OUT_DIR}` (see configs/tiny-diffusion.yaml).
    """
    from dppp.pipeline.renderers.tiny_diffusion import build_tiny_diffusion

    folder = build_tiny_diffusion(out_dir, seed=seed, overwrite=overwrite)
    typer.echo(f"tiny diffusion pipeline saved to {folder}")


@app.command("sd15-shaped")
def sd15_shaped(
    out_dir: Annotated[Path, typer.Argument(help="Folder to save the pipeline in (save_pretrained format).")],
    scale: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Fraction of SD 1.5's widths (1.0: the real shape).")
    ] = 1.0,
    dtype: Annotated[
        str, typer.Option(help="Weights saved as fp32, fp16 or bf16 (fp16: a 2 GiB folder).")
    ] = "fp16",
    seed: Annotated[int, typer.Option(help="Seed of the random initial weights.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing non-empty folder.")
    ] = False,
) -> None:
    """Build Stable Diffusion 1.5's architecture with random weights, offline: SD 1.5's GPU cost, no download.

    For throughput measurements (benchmarks/bench_diffusers.py) and paper-scale trials without weights.
    Its images are coloured noise, not people.
    """
    from dppp.pipeline.renderers.sd15_shaped import build_sd15_shaped

    if dtype not in ("fp32", "fp16", "bf16"):
        raise UserError(f"--dtype must be fp32, fp16 or bf16, got {dtype!r}")
    folder = build_sd15_shaped(out_dir, seed=seed, scale=scale, dtype=dtype, overwrite=overwrite)
    typer.echo(f"SD1.5-shaped pipeline (scale {scale}, {dtype}) saved to {folder}")


@app.command("clip-vit-b16-shaped")
def clip_vit_b16_shaped(
    out_dir: Annotated[Path, typer.Argument(help="Folder to save the CLIP in (save_pretrained format).")],
    seed: Annotated[int, typer.Option(help="Seed of the random initial weights.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing non-empty folder.")
    ] = False,
) -> None:
    """Build CLIP ViT-B/16's architecture (149.6 M parameters) with random weights and a 49,408-token
    tokenizer, offline: stage 2's GPU cost at paper scale, no download.

    Use it as `--set train.model.backbone=OUT_DIR` (benchmarks/bench_train_gpu.py measures with it). Its
    figures are costs, not accuracies: the weights are random.
    """
    from dppp.trainer.clip.clip_shaped import build_clip_vit_b16_shaped

    folder = build_clip_vit_b16_shaped(out_dir, seed=seed, overwrite=overwrite)
    typer.echo(f"CLIP ViT-B/16-shaped model and tokenizer saved to {folder}")
