"""The diffusers renderer's config (`generate.renderer` with `kind: diffusers`) and where its model comes
from: a local pipeline folder, or a hub id found in the Hugging Face cache (downloaded only if allowed),
a missing one being a UserError that says so. Imported without torch or diffusers, so a config validates
before any heavy library loads; the renderer itself is pipeline/renderers/diffusers_renderer.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from dppp.foundation.errors import UserError
from dppp.foundation.schema import StrictModel
from dppp.pipeline.renderer import TokenizerSource

# diffusers is imported inside resolve_model_source: loading the config imports this module, and must not pay
# for diffusers.


class DiffusersRendererConfig(StrictModel):
    kind: Literal["diffusers"] = "diffusers"
    model: str = Field(min_length=1)  # hub id (org/name) or a local folder saved with save_pretrained
    revision: str | None = None  # hub branch, tag or commit; None: the default branch
    variant: str | None = None  # weight-file variant on the hub, e.g. "fp16"
    local_files_only: bool = False  # hub ids: use only the local Hugging Face cache, never download
    scheduler: str | None = None  # a diffusers scheduler class name; None keeps the pipeline's own
    scheduler_options: dict[str, Any] = Field(default_factory=dict)  # e.g. {use_karras_sigmas: true}
    steps: int = Field(30, ge=1)
    guidance: float = Field(7.5, ge=0)
    height: int = Field(512, ge=8, multiple_of=8)  # generation size: a tall portrait, as pedestrians are
    width: int = Field(256, ge=8, multiple_of=8)
    negative_prompt: str = ""  # used for views whose own negative prompt is empty
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    attention: Literal["auto", "xformers", "sdpa"] = "auto"
    # torch.compile the denoiser and the VAE decoder (CUDA only): whole graphs with SDPA attention; it
    # costs about a minute of warm-up per worker process and per batch shape.
    compile: bool = False
    channels_last: bool = False  # channels_last memory format for the UNet/VAE (CUDA only)
    on_unsupported: Literal["downgrade", "refuse"] = "downgrade"
    # Images per pipeline call. "auto": the driver has one worker probe the fastest batch that fits in
    # memory (pipeline/renderers/batch_probe.py) and records the choice in dataset.json; a rerun reuses it.
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 4
    max_batch_size: int = Field(64, ge=1)  # the largest batch "auto" tries
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: leave the process setting
    identity_noise_share: float = Field(0.0, ge=0.0, le=1.0)
    max_blank_retries: int = Field(3, ge=0)
    blank_std: float = Field(0.02, ge=0.0, le=1.0)  # pixel std (0..1 scale) below this: a flat image
    blank_mean: float = Field(0.02, ge=0.0, le=1.0)  # pixel mean below this: an (almost) black image


def diffusers_tokenizer(config: DiffusersRendererConfig) -> TokenizerSource:
    """The tokenizer saved with the pipeline: the one its text encoder reads the prompts with."""
    return TokenizerSource(config.model, "tokenizer", config.revision)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_source(config: DiffusersRendererConfig) -> tuple[str, str | None]:
    """The folder to load the pipeline from, and the resolved revision (a commit hash for hub models).

    A local path must be a diffusers pipeline folder (it has model_index.json). A hub id is looked up in
    the Hugging Face cache first and downloaded only if allowed; a missing one is a UserError, never a
    traceback from deep inside the hub client.
    """
    model = config.model
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"renderer model {model!r} is a file, not a diffusers pipeline folder")
        if not (path / "model_index.json").is_file():
            raise UserError(
                f"renderer model {model!r} is not a diffusers pipeline folder (no model_index.json); "
                "build the tiny one with `dppp models tiny-diffusion DIR` or save one with save_pretrained"
            )
        return str(path), None
    hint = " (build it with `dppp models tiny-diffusion DIR`)" if "tiny" in model else ""
    if not _HUB_ID.match(model):
        raise UserError(f"renderer model folder {model!r} does not exist{hint}")
    from diffusers import DiffusionPipeline

    try:
        folder = DiffusionPipeline.download(
            model,
            revision=config.revision,
            variant=config.variant,
            local_files_only=config.local_files_only,
        )
    except (OSError, ValueError) as exc:  # the hub client's not-found / offline errors derive from these
        where = "in the local Hugging Face cache" if config.local_files_only else "on the hub or in the cache"
        raise UserError(
            f"renderer model {model!r} is neither a local folder{hint} nor found {where} "
            f"(revision {config.revision or 'default'}): {exception_summary(exc)}"
        ) from None
    folder_path = Path(folder)
    revision = folder_path.name if folder_path.parent.name == "snapshots" else config.revision
    return str(folder_path), revision


def exception_summary(exc: BaseException) -> str:
    """An exception in one line for a message: its type and the first line of its text."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
