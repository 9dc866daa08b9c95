"""Device / dtype / attention / compile / channels_last selection, with and without CUDA and xformers."""

from __future__ import annotations

import pytest

from dppp.foundation.errors import ConfigError
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig
from dppp.pipeline.renderers.diffusers_runtime import Runtime, select_runtime


def pick(cuda: bool, xformers: bool = False, bf16: bool = True, **config) -> Runtime:
    return select_runtime(
        DiffusersRendererConfig(model="org/model", **config),
        cuda_available=cuda,
        xformers_available=xformers,
        bf16_supported=bf16,
    )


def test_auto_on_cuda_with_xformers_uses_fp16_and_xformers():
    rt = pick(cuda=True, xformers=True)
    assert (rt.device, rt.dtype, rt.attention, rt.warnings) == ("cuda", "fp16", "xformers", ())


def test_auto_on_cuda_without_xformers_falls_back_to_sdpa_silently():
    rt = pick(cuda=True, xformers=False)
    assert (rt.device, rt.dtype, rt.attention, rt.warnings) == ("cuda", "fp16", "sdpa", ())


def test_auto_on_cpu_is_fp32_and_sdpa_even_if_xformers_is_importable():
    rt = pick(cuda=False, xformers=True)
    assert (rt.device, rt.dtype, rt.attention, rt.compile, rt.channels_last, rt.warnings) == (
        "cpu",
        "fp32",
        "sdpa",
        False,
        False,
        (),
    )


def test_explicit_cuda_options_are_kept_on_a_cuda_machine():
    rt = pick(
        cuda=True,
        xformers=True,
        device="cuda",
        dtype="bf16",
        attention="xformers",
        compile=True,
        channels_last=True,
    )
    assert rt == Runtime("cuda", "bf16", "xformers", True, True, ())


def test_sdpa_can_be_forced_on_cuda_even_with_xformers_installed():
    assert pick(cuda=True, xformers=True, attention="sdpa").attention == "sdpa"


def test_fp32_can_be_asked_for_on_cuda():
    assert pick(cuda=True, dtype="fp32").dtype == "fp32"


def test_cuda_only_options_on_cpu_are_downgraded_with_a_warning_each():
    rt = pick(
        cuda=False,
        device="cuda",
        dtype="fp16",
        attention="xformers",
        compile=True,
        channels_last=True,
    )
    assert rt == Runtime("cpu", "fp32", "sdpa", False, False, rt.warnings)
    keys = [w.split("=")[0] for w in rt.warnings]
    assert keys == [
        "generate.renderer.device",
        "generate.renderer.dtype",
        "generate.renderer.attention",
        "generate.renderer.compile",
        "generate.renderer.channels_last",
    ]
    assert "CUDA is not available" in rt.warnings[0] and "using cpu instead" in rt.warnings[0]


def test_bf16_on_cpu_is_downgraded_to_fp32():
    rt = pick(cuda=False, dtype="bf16")
    assert rt.dtype == "fp32" and rt.warnings == (
        "generate.renderer.dtype=bf16: half precision is only used on CUDA; using fp32 instead",
    )


def test_bf16_on_a_gpu_without_bf16_becomes_fp16():
    rt = pick(cuda=True, bf16=False, dtype="bf16")
    assert rt.dtype == "fp16" and "compute capability" in rt.warnings[0]


def test_xformers_asked_for_on_cuda_but_not_installed_is_downgraded_to_sdpa():
    rt = pick(cuda=True, xformers=False, attention="xformers")
    assert rt.attention == "sdpa" and "not installed" in rt.warnings[0]


def test_refuse_raises_one_error_listing_every_unsupported_request():
    with pytest.raises(ConfigError) as info:
        pick(cuda=False, on_unsupported="refuse", dtype="fp16", attention="xformers")
    message = str(info.value)
    assert "generate.renderer.dtype=fp16" in message
    assert "generate.renderer.attention=xformers" in message
    assert "on_unsupported=downgrade" in message


def test_refuse_does_not_fire_when_everything_is_supported():
    rt = pick(cuda=True, xformers=True, on_unsupported="refuse", dtype="fp16", attention="xformers")
    assert rt.warnings == ()


def test_refuse_on_cpu_with_auto_settings_is_fine():
    assert pick(cuda=False, on_unsupported="refuse").device == "cpu"


def test_cpu_device_can_be_forced_on_a_cuda_machine():
    rt = pick(cuda=True, xformers=True, device="cpu")
    assert (rt.device, rt.dtype, rt.attention) == ("cpu", "fp32", "sdpa")


def test_unknown_option_values_are_rejected_by_the_config():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DiffusersRendererConfig(model="org/model", dtype="fp8")
    with pytest.raises(ValidationError):
        DiffusersRendererConfig(model="org/model", attention="flash")
    with pytest.raises(ValidationError):
        DiffusersRendererConfig()  # the model is required: there is no sensible default to download
