"""Diffusers text-to-image renderer (named so it never shadows the `diffusers` package). Its config and
model lookup are pipeline/renderers/diffusers_config.py, its blank-image checks and retry seeds
pipeline/renderers/blank_images.py.

Loads any text-to-image pipeline diffusers can load (`AutoPipelineForText2Image`: SD 1.x/2.x, SDXL,
SD3-class) by hub id or local folder, once per worker, and renders batches of views:

- Noise: each image's initial latents are drawn here, not by the pipeline, from a CPU
  `torch.Generator` seeded with the view's seed, in fp32, then moved to the device. The same view gets
  the same starting noise on any device and in any batch, and the identity-noise option can mix them.
  The same generator (its state advanced) is handed to the pipeline, one per image, for schedulers that
  draw noise at every step (ancestral ones).
- Identity consistency (`identity_noise_share` = a): latents = sqrt(1-a) * view_noise +
  sqrt(a) * identity_noise, where identity_noise comes from the view's identity_seed. Both are unit
  Gaussians and independent, so the mix is a unit Gaussian too (variance preserving) and the scheduler
  sees noise of the scale it expects. a = 0: views are independent; larger a: views of one identity share
  layout, colours and silhouette more, at the cost of less pose/background diversity between them.
- Determinism: batches are cut from the start of the `render` call in fixed `batch_size` chunks, and the
  torch thread count is fixed (`threads`, or the worker's setting): both change floating-point results.
- Blank or safety-filtered outputs (nearly uniform or nearly black images, or the pipeline's NSFW flag)
  are re-rendered alone (batch of one) with the seed bumped by `bumped_seed`, at most
  `max_blank_retries` times; `RenderedImage.attempts` records how many renders the image took.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import diffusers
import torch
import transformers
from diffusers import AutoPipelineForText2Image
from diffusers.pipelines import pipeline_utils
from PIL import Image

from dppp.dataset.keys import sample_key
from dppp.foundation.errors import ConfigError, UserError
from dppp.pipeline.renderer import RenderedImage
from dppp.pipeline.renderers.batch_probe import candidate_sizes, probe_batch_sizes
from dppp.pipeline.renderers.blank_images import SEED_BUMP, blank_flags, bumped_seed, to_uint8_pixels
from dppp.pipeline.renderers.diffusers_config import (
    DiffusersRendererConfig,
    exception_summary,
    resolve_model_source,
)
from dppp.pipeline.renderers.diffusers_runtime import probe_machine, select_runtime
from dppp.prompts.spec import ViewSpec

if TYPE_CHECKING:
    from dppp.pipeline.renderers.batch_probe import ProbeResult
    from dppp.pipeline.renderers.diffusers_runtime import Machine, Runtime

log = logging.getLogger(__name__)


def _dtype_keyword() -> str:
    """Recent diffusers take `dtype=` and deprecate `torch_dtype=`; older ones know only the latter."""
    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


def _scheduler_from_name(name: str, options: dict[str, Any], current):
    cls = getattr(diffusers, name, None)
    if cls is None or not isinstance(cls, type) or not name.endswith("Scheduler"):
        known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("_"))
        raise ConfigError(
            f"unknown scheduler {name!r}; diffusers offers: {', '.join(known)}",
            path="generate.renderer.scheduler",
        )
    return cls.from_config(current.config, **options)


def _jsonable(value: Any) -> Any:
    """Scheduler configs hold tuples, numpy scalars, infinities and the like: make them plain JSON values
    (an infinity, e.g. DPMSolverMultistepScheduler's lambda_min_clipped, becomes the string "-inf": strict
    JSON has no infinities)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (bool, int, float, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class DiffusersRenderer:
    """Renders views with a diffusers text-to-image pipeline; see the module docstring for the rules."""

    def __init__(self, config: DiffusersRendererConfig, *, pipeline=None, machine: Machine | None = None):
        """Load the configured pipeline, or wrap `pipeline` (an already built one, for tests/benchmarks)."""
        self.config = config
        machine = machine or probe_machine()
        self.runtime: Runtime = select_runtime(
            config,
            cuda_available=machine.cuda_available,
            xformers_available=machine.xformers_available,
            bf16_supported=machine.bf16_supported,
        )
        for warning in self.runtime.warnings:
            log.warning("renderer: %s", warning)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.revision = config.revision
        if pipeline is None:
            pipeline = self._load()
        self.pipe = pipeline
        if config.scheduler is not None:
            self.pipe.scheduler = _scheduler_from_name(
                config.scheduler, config.scheduler_options, pipeline.scheduler
            )
        elif config.scheduler_options:
            self.pipe.scheduler = type(pipeline.scheduler).from_config(
                pipeline.scheduler.config, **config.scheduler_options
            )
        self._batch_size = None if config.batch_size == "auto" else config.batch_size
        self._compiled = False
        self._apply_runtime()
        self.pipe.set_progress_bar_config(disable=True)

    # --- loading -----------------------------------------------------------------------------------
    def _load(self):
        folder, self.revision = resolve_model_source(self.config)
        try:
            return AutoPipelineForText2Image.from_pretrained(
                folder,
                **{_dtype_keyword(): self.runtime.torch_dtype},
                variant=self.config.variant,
                local_files_only=True,  # resolve_model_source already fetched what is needed
            )
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"renderer model {self.config.model!r} could not be loaded as a text-to-image pipeline: "
                f"{exception_summary(exc)}"
            ) from None

    @property
    def batch_size(self) -> int:
        """The images per pipeline call; "auto" must be resolved first (`choose_batch_size`)."""
        if self._batch_size is None:
            raise RuntimeError("batch_size is 'auto' and was not resolved: call choose_batch_size() first")
        return self._batch_size

    def use_batch_size(self, size: int) -> None:
        """Fix the batch size (the one a probe chose, or the one recorded for the dataset)."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        self._batch_size = size

    def choose_batch_size(self) -> ProbeResult:
        """Time full batches of growing size (eagerly, before any compile) and keep the fastest that fits."""
        views = _probe_views(self.config.max_batch_size)
        result = probe_batch_sizes(
            lambda n: self._run(views[:n], [0] * n),
            candidate_sizes(self.config.max_batch_size),
            synchronize=self._synchronize,
            is_out_of_memory=_is_out_of_memory,
            release_memory=self._release_memory,
        )
        self.use_batch_size(result.chosen)
        return result

    def _synchronize(self) -> None:
        if self.runtime.device == "cuda":
            torch.cuda.synchronize()

    def _release_memory(self) -> None:
        gc.collect()
        if self.runtime.device == "cuda":
            torch.cuda.empty_cache()

    @property
    def denoiser(self):
        """The network run at every step: a UNet (SD 1.x/2.x, SDXL) or a transformer (SD3-class)."""
        denoiser = getattr(self.pipe, "unet", None)
        if denoiser is None:
            denoiser = getattr(self.pipe, "transformer", None)
        if denoiser is None:
            raise UserError(f"renderer model {self.config.model!r} has neither a unet nor a transformer")
        return denoiser

    def _apply_runtime(self) -> None:
        rt = self.runtime
        if self.pipe.dtype != rt.torch_dtype:  # only a pipeline handed in ready-made can differ
            self.pipe.to(dtype=rt.torch_dtype)
        self.pipe.to(rt.device)
        if rt.attention == "xformers":
            self.pipe.enable_xformers_memory_efficient_attention()
        # "sdpa": diffusers' default attention processors already call torch's scaled_dot_product_attention.
        if rt.channels_last:
            self.denoiser.to(memory_format=torch.channels_last)
            self.pipe.vae.to(memory_format=torch.channels_last)

    def _compile_once(self) -> None:
        """Compile at the first render, not at load: a batch-size probe runs eagerly before it, so it
        does not pay a compile per tried size."""
        if self._compiled or not self.runtime.compile:
            return
        self._compiled = True
        # Whole graphs where the attention is SDPA (no graph breaks: fewer, larger kernels); xformers'
        # custom ops break the graph, and a partial compile still speeds up what lies around them.
        # Static shapes: every call has the same batch (see `_run`), so one graph serves the whole run.
        options = {"fullgraph": self.runtime.attention == "sdpa", "dynamic": False}
        name = "unet" if getattr(self.pipe, "unet", None) is not None else "transformer"
        setattr(self.pipe, name, torch.compile(getattr(self.pipe, name), **options))
        # The decoder module, not `vae.decode`: the pipeline passes decode() its list of generators,
        # which a whole-graph compile cannot take as an input.
        self.pipe.vae.decoder = torch.compile(self.pipe.vae.decoder, **options)

    @property
    def fixed_shape(self) -> bool:
        """Whether every pipeline call renders exactly `batch_size` images (compiled runs).

        A compiled graph is specialised to its batch size: a shard's short last batch, or a blank
        re-render of one image, would otherwise compile a new graph (about a minute each, and torch
        falls back to eager after a handful). Padding the call with copies of its last view keeps one
        graph for the whole run, and keeps the numerics of every image independent of which shapes a
        worker happened to see first, so shards stay byte-identical across runs."""
        return self.runtime.compile

    # --- the Renderer protocol ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        c, rt = self.config, self.runtime
        scheduler = self.pipe.scheduler
        return {
            "name": "diffusers",
            "model": c.model,
            "revision": self.revision,
            "variant": c.variant,
            "pipeline": type(self.pipe).__name__,
            "scheduler": {"class": type(scheduler).__name__, "config": _jsonable(dict(scheduler.config))},
            "steps": c.steps,
            "guidance": c.guidance,
            "height": c.height,
            "width": c.width,
            "negative_prompt_default": c.negative_prompt,
            "device": rt.device,
            "dtype": rt.dtype,
            "attention": rt.attention,
            "compile": rt.compile,
            "channels_last": rt.channels_last,
            "batch_size": self.batch_size,
            "threads": torch.get_num_threads(),
            "identity_noise_share": c.identity_noise_share,
            "noise": "cpu torch.Generator(seed) fp32 latents; retries use bumped_seed(seed, attempt)",
            "seed_bump": SEED_BUMP,
            "versions": {
                "diffusers": diffusers.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }

    def render(self, views: Sequence[ViewSpec]) -> list[RenderedImage]:
        self._compile_once()
        results: list[RenderedImage] = []
        size = self.batch_size
        for start in range(0, len(views), size):
            chunk = views[start : start + size]
            images, rejected = self._run(chunk, [0] * len(chunk))
            for view, image, rejected_now in zip(chunk, images, rejected, strict=True):
                attempt = 0
                while rejected_now and attempt < self.config.max_blank_retries:
                    attempt += 1
                    (image,), (rejected_now,) = self._run([view], [attempt])
                if rejected_now:
                    log.warning(
                        "renderer: %s is still blank or safety-filtered after %d renders; keeping it",
                        sample_key(view.pid, view.view),
                        attempt + 1,
                    )
                results.append(RenderedImage(image=image, attempts=attempt + 1))
        return results

    # --- internals ---------------------------------------------------------------------------------
    def latent_shape(self) -> tuple[int, int, int]:
        scale = self.pipe.vae_scale_factor
        return (self.denoiser.config.in_channels, self.config.height // scale, self.config.width // scale)

    def initial_noise(self, view: ViewSpec, attempt: int):
        """This view's starting latents (unit Gaussian, fp32, CPU) and its generator, advanced past them."""
        shape = self.latent_shape()
        generator = torch.Generator("cpu").manual_seed(bumped_seed(view.seed, attempt))
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        share = self.config.identity_noise_share
        if share > 0:
            # A retry keeps the identity's part (consistency) and changes only the view's part; at share 1
            # there is no view part, so the identity seed is bumped too or the retry would repeat itself.
            identity_attempt = attempt if share >= 1.0 else 0
            identity_gen = torch.Generator("cpu").manual_seed(
                bumped_seed(view.identity_seed, identity_attempt)
            )
            identity = torch.randn(shape, generator=identity_gen, dtype=torch.float32)
            noise = math.sqrt(1.0 - share) * noise + math.sqrt(share) * identity
        return noise, generator

    def _run(self, views: Sequence[ViewSpec], attempts: Sequence[int]) -> tuple[list, list[bool]]:
        """One pipeline call; returns the PIL images and, per image, whether it is rejected (blank or
        safety-flagged) and must be re-rendered.

        The pipeline hands back its decoded images as a tensor on the device; they are turned into uint8
        there and checked for blankness there, so only uint8 pixels cross to the CPU. The pixel values
        are exactly those of the pipeline's own PIL output (the same fp32 multiply and round)."""
        count = len(views)
        if self.fixed_shape and self._batch_size and count < self._batch_size:  # (the probe needs none)
            padding = self._batch_size - count
            views, attempts = [*views, *[views[-1]] * padding], [*attempts, *[attempts[-1]] * padding]
        drawn = [self.initial_noise(v, a) for v, a in zip(views, attempts, strict=True)]
        latents = torch.stack([noise for noise, _ in drawn]).to(self.runtime.device, self.runtime.torch_dtype)
        negative = [v.negative_prompt or self.config.negative_prompt for v in views]
        with torch.inference_mode():
            out = self.pipe(
                prompt=[v.prompt for v in views],
                negative_prompt=negative if any(negative) else None,
                num_inference_steps=self.config.steps,
                guidance_scale=self.config.guidance,
                height=self.config.height,
                width=self.config.width,
                latents=latents,
                generator=[generator for _, generator in drawn],
                output_type="pt",
            )
            pixels = to_uint8_pixels(out.images)
            blank = blank_flags(
                pixels, std_threshold=self.config.blank_std, mean_threshold=self.config.blank_mean
            )
            pixels, blank = pixels.cpu().numpy(), blank.cpu().tolist()
        nsfw = getattr(out, "nsfw_content_detected", None) or [False] * len(views)
        images = [Image.fromarray(array) for array in pixels[:count]]
        return images, [bool(flag) or empty for flag, empty in zip(nsfw[:count], blank[:count], strict=True)]


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


_PROBE_PROMPT = "a photo of a person wearing a red jacket and blue jeans, walking on a city street, full body"


def _probe_views(n: int) -> list[ViewSpec]:
    return [
        ViewSpec(
            pid=0,
            view=i,
            camid=0,
            seed=i,
            identity_seed=0,
            attributes={},
            prompt=_PROBE_PROMPT,
            negative_prompt="",
        )
        for i in range(n)
    ]
