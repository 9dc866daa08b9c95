"""`dppp generate --dry-run`'s rendering-time estimate: measured rates only, scaled by counted FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dppp.cli import main
from dppp.pipeline.capacity import estimate_render_hours
from dppp.pipeline.renderer import duration
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig
from dppp.pipeline.renderers.diffusers_estimate import SD15_RATES, is_sd15_architecture, sd15_flops_per_image
from dppp.pipeline.renderers.procedural.renderer import ProceduralRendererConfig

ROOT = Path(__file__).resolve().parents[2]


def test_reference_cost_is_the_counted_flops_of_one_sd15_image():
    # bench_diffusers.py counted 19.901 TFLOP per image at 512x256, 25 steps, guidance on (H200 run).
    assert sd15_flops_per_image(512, 256, 25, True) == pytest.approx(19.901e12, rel=1e-3)
    assert sd15_flops_per_image(512, 256, 50, True) > 1.9 * sd15_flops_per_image(512, 256, 25, True)
    assert sd15_flops_per_image(512, 256, 25, False) < 0.6 * sd15_flops_per_image(512, 256, 25, True)


def test_the_estimate_uses_the_measured_rate_of_the_configured_mode():
    compiled = DiffusersRendererConfig(
        model="stable-diffusion-v1-5/stable-diffusion-v1-5", steps=25, compile=True
    )
    eager = compiled.model_copy(update={"compile": False})
    fast, slow = estimate_render_hours(compiled, 36_000), estimate_render_hours(eager, 36_000)
    rates = {rate.compiled: rate.images_per_s for rate in SD15_RATES}
    assert fast.hours == pytest.approx(36_000 / rates[True] / 3600)
    assert slow.hours == pytest.approx(36_000 / rates[False] / 3600)
    text = fast.describe(36_000, shards=10)
    assert "NVIDIA H200" in text and "benchmarks/results/" in text and "compile warm-up" in text


def test_a_model_with_no_measured_rate_gets_no_estimate(tmp_path):
    assert estimate_render_hours(DiffusersRendererConfig(model="someone/sdxl-turbo"), 100) is None
    folder = tmp_path / "model" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"block_out_channels": [32, 64], "cross_attention_dim": 32})
    )
    assert not is_sd15_architecture(str(tmp_path / "model"))
    (folder / "config.json").write_text(
        json.dumps({"block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768})
    )
    assert is_sd15_architecture(str(tmp_path / "model"))


def test_many_gpus_wait_for_the_last_round_of_shards():
    estimate = estimate_render_hours(DiffusersRendererConfig(model="sd-1-5-local", steps=25), 10_000)
    # 10 shards on 8 GPUs take two rounds of one shard each: 2/10 of the one-GPU time, not 1/8.
    assert f"{estimate.hours * 2 / 10 * 60:.0f} min on 8 GPUs" in estimate.describe(10_000, shards=10)


def test_procedural_estimates_are_per_cpu_core():
    estimate = estimate_render_hours(ProceduralRendererConfig(), 276 * 3600)
    assert estimate.device == "CPU core" and estimate.hours == pytest.approx(1.0)


def test_durations_read_naturally():
    assert (duration(2.5), duration(0.5), duration(0.001)) == ("2.50 h", "30 min", "under a minute")


def test_dry_run_prints_the_plan_and_the_expected_gpu_hours(capsys):
    config = str(ROOT / "configs" / "geneperson.yaml")
    assert main(["generate", config, "--dry-run", "--set", "generate.prompts.tokenizer=estimate"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Nothing written" in out
    assert "on one GPU" in out and "on 8 GPUs" in out and "NVIDIA H200" in out
