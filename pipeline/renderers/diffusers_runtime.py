"""Where and how a diffusion model runs: device, dtype, attention kernel, torch.compile, channels_last.

`select_runtime` is a pure function of what the config asks for and what the machine has, so every
combination (CUDA present or absent, xformers installed or not, bf16-capable or not) is unit-tested
without a GPU. `probe_machine` reads the real machine; the renderer calls both once when it loads.

Rules:
- device "auto" is CUDA when available, else CPU.
- On CUDA, dtype "auto" is fp16: every CUDA GPU runs it and it is what SD checkpoints are published for
  (bf16 is chosen explicitly; it needs compute capability >= 8). Attention "auto" is xformers'
  memory-efficient kernel when installed, otherwise PyTorch's scaled_dot_product_attention (SDPA).
- On CPU: fp32 and SDPA only. Half precision, xformers, torch.compile and channels_last are treated as
  CUDA-only options here (half precision is slow or unsupported on CPU for many ops, xformers has no CPU
  kernels, compile and channels_last only pay off on the GPU).
- A request the machine cannot honour is either downgraded to the nearest supported choice with a
  warning naming the config key (`on_unsupported: downgrade`, the default) or refused with a ConfigError
  listing every such request (`on_unsupported: refuse`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from dppp.foundation.errors import ConfigError

if TYPE_CHECKING:
    from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig

Device = Literal["cuda", "cpu"]
DType = Literal["fp16", "bf16", "fp32"]
Attention = Literal["xformers", "sdpa"]

CONFIG_PATH = "generate.renderer"  # where the renderer block sits in an experiment YAML


@dataclass(frozen=True)
class Machine:
    """What the machine offers, as far as the runtime choice is concerned."""

    cuda_available: bool
    xformers_available: bool
    bf16_supported: bool = True  # only meaningful with CUDA


@dataclass(frozen=True)
class Runtime:
    device: Device
    dtype: DType
    attention: Attention
    compile: bool
    channels_last: bool
    warnings: tuple[str, ...] = ()

    @property
    def torch_dtype(self):
        return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self.dtype]


def select_runtime(
    config: DiffusersRendererConfig,
    *,
    cuda_available: bool,
    xformers_available: bool,
    bf16_supported: bool = True,
) -> Runtime:
    """Resolve the config's device/dtype/attention/compile/channels_last requests against the machine."""
    problems: list[str] = []  # one line per request the machine cannot honour, with what replaces it

    def unsupported(key: str, asked: object, why: str, instead: object) -> None:
        problems.append(f"{CONFIG_PATH}.{key}={asked}: {why}; using {instead} instead")

    if config.device == "cuda" and not cuda_available:
        unsupported("device", "cuda", "CUDA is not available on this machine", "cpu")
        device: Device = "cpu"
    elif config.device == "auto":
        device = "cuda" if cuda_available else "cpu"
    else:
        device = config.device
    on_cuda = device == "cuda"

    if config.dtype == "auto":
        dtype: DType = "fp16" if on_cuda else "fp32"
    elif config.dtype in ("fp16", "bf16") and not on_cuda:
        unsupported("dtype", config.dtype, "half precision is only used on CUDA", "fp32")
        dtype = "fp32"
    elif config.dtype == "bf16" and not bf16_supported:
        unsupported("dtype", "bf16", "this GPU has no bf16 support (compute capability < 8.0)", "fp16")
        dtype = "fp16"
    else:
        dtype = config.dtype

    if config.attention == "auto":
        attention: Attention = "xformers" if on_cuda and xformers_available else "sdpa"
    elif config.attention == "xformers" and not on_cuda:
        unsupported("attention", "xformers", "xformers only runs on CUDA", "sdpa")
        attention = "sdpa"
    elif config.attention == "xformers" and not xformers_available:
        unsupported("attention", "xformers", "xformers is not installed (pip install xformers)", "sdpa")
        attention = "sdpa"
    else:
        attention = config.attention

    compile_ = config.compile
    if compile_ and not on_cuda:
        unsupported("compile", "true", "torch.compile is only enabled on CUDA", "false")
        compile_ = False
    channels_last = config.channels_last
    if channels_last and not on_cuda:
        unsupported("channels_last", "true", "channels_last is only enabled on CUDA", "false")
        channels_last = False

    if problems and config.on_unsupported == "refuse":
        listing = "\n  ".join(problems)
        raise ConfigError(
            "the renderer asks for options this machine cannot run "
            f"(set {CONFIG_PATH}.on_unsupported=downgrade to fall back):\n  {listing}"
        )
    return Runtime(device, dtype, attention, compile_, channels_last, tuple(problems))


def probe_machine() -> Machine:
    """The real machine: CUDA, an importable xformers, bf16 support of the current GPU."""
    cuda = torch.cuda.is_available()
    return Machine(
        cuda_available=cuda,
        # xformers is only usable with CUDA; without it, do not even import it (its import is slow).
        xformers_available=cuda and importlib.util.find_spec("xformers") is not None,
        bf16_supported=cuda and torch.cuda.is_bf16_supported(),
    )
