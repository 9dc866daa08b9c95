"""The diffusers renderer on the tiny offline pipeline: determinism, round trip, noise, blank re-seeding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dppp.foundation.errors import ConfigError, UserError
from dppp.pipeline.renderers.blank_images import blank_flags, bumped_seed, is_blank
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig
from dppp.pipeline.renderers.diffusers_renderer import DiffusersRenderer
from dppp.pipeline.renderers.diffusers_runtime import Machine
from dppp.pipeline.renderers.registry import load_renderer
from dppp.pipeline.renderers.tiny_diffusion import build_tiny_diffusion, build_tiny_diffusion_pipeline
from dppp.prompts.spec import ViewSpec

REPO = Path(__file__).resolve().parents[2]
CPU = Machine(cuda_available=False, xformers_available=False)
TINY = {"height": 64, "width": 32, "steps": 3, "guidance": 4.0, "batch_size": 4}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_diffusion(tmp_path_factory.mktemp("models") / "tiny-diffusion")


def config(model: Path | str, **overrides) -> DiffusersRendererConfig:
    return DiffusersRendererConfig(model=str(model), **{**TINY, **overrides})


def view(
    pid: int, v: int, *, seed: int | None = None, prompt: str | None = None, negative: str = ""
) -> ViewSpec:
    return ViewSpec(
        pid=pid,
        view=v,
        camid=v % 3,
        seed=seed if seed is not None else 1000 * pid + v,
        identity_seed=77 + pid,
        attributes={"gender": "woman"},
        prompt=prompt or f"a photo of a woman wearing a red hoodie, view {v}",
        negative_prompt=negative,
    )


def pixels(rendered) -> list[np.ndarray]:
    return [np.asarray(r.image) for r in rendered]


# ------------------------------------------------------------------------------- determinism, round trip


def test_tiny_pipeline_renders_real_images_at_generation_size(tiny_model):
    renderer = DiffusersRenderer(config(tiny_model), machine=CPU)
    out = renderer.render([view(1, v) for v in range(5)])  # 5 views: one full batch of 4, then 1
    assert len(out) == 5
    for item in out:
        assert item.image.mode == "RGB" and item.image.size == (32, 64)  # PIL size is (width, height)
        assert item.attempts == 1
        assert not is_blank(item.image, std_threshold=0.02, mean_threshold=0.02)
    arrays = pixels(out)
    assert not np.array_equal(arrays[0], arrays[1])  # different seeds, different images


SUBPROCESS_SCRIPT = r"""
import hashlib, json, sys
from dppp.pipeline.renderers.diffusers_renderer import DiffusersRenderer
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig
from dppp.prompts.spec import ViewSpec
cfg = DiffusersRendererConfig(**json.loads(sys.argv[1]))
views = [ViewSpec(pid=3, view=v, camid=0, seed=500 + v, identity_seed=9, attributes={},
                  prompt=f"a man in a blue coat {v}", negative_prompt="blurry") for v in range(3)]
out = DiffusersRenderer(cfg).render(views)
print(json.dumps([hashlib.sha256(r.image.tobytes()).hexdigest() for r in out]))
"""


@pytest.mark.slow
def test_two_separate_processes_render_identical_pixels(tiny_model):
    cfg = json.dumps({"model": str(tiny_model), **TINY, "threads": 1, "identity_noise_share": 0.3})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", SUBPROCESS_SCRIPT, cfg], cwd=REPO, env=env, capture_output=True, text=True
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, second = (json.loads(run.stdout.strip().splitlines()[-1]) for run in runs)
    assert first == second
    assert len(set(first)) == 3  # and the three views really are different images


def test_saved_folder_round_trips_to_the_same_pixels_as_the_in_memory_pipeline(tmp_path):
    views = [view(2, v) for v in range(4)]
    pipe = build_tiny_diffusion_pipeline(0)
    pipe.save_pretrained(tmp_path / "saved")
    loaded = DiffusersRenderer(config(tmp_path / "saved"), machine=CPU)
    in_memory = DiffusersRenderer(config(tmp_path / "saved"), pipeline=pipe, machine=CPU)
    assert type(loaded.pipe).__name__ == "StableDiffusionPipeline"
    for a, b in zip(pixels(loaded.render(views)), pixels(in_memory.render(views)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_views_render_the_same_pixels_twice_in_one_process(tiny_model):
    renderer = DiffusersRenderer(config(tiny_model), machine=CPU)
    views = [view(4, v) for v in range(3)]
    for a, b in zip(pixels(renderer.render(views)), pixels(renderer.render(views)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_renderer_builds_the_diffusers_renderer_and_describe_is_complete_json(tiny_model):
    renderer = load_renderer(config(tiny_model, scheduler="EulerDiscreteScheduler"))
    assert isinstance(renderer, DiffusersRenderer)
    info = json.loads(json.dumps(renderer.describe()))  # must survive the trip into a sample's json
    assert info["name"] == "diffusers" and info["model"] == str(tiny_model)
    assert info["pipeline"] == "StableDiffusionPipeline"
    assert info["scheduler"]["class"] == "EulerDiscreteScheduler"
    assert info["scheduler"]["config"]["beta_schedule"] == "scaled_linear"  # kept from the model's own
    assert (info["steps"], info["guidance"], info["height"], info["width"]) == (3, 4.0, 64, 32)
    assert (info["device"], info["dtype"], info["attention"]) == ("cpu", "fp32", "sdpa")
    assert set(info["versions"]) == {"diffusers", "torch", "transformers"}
    assert info["revision"] is None  # a local folder has no hub revision
    assert not is_blank(renderer.render([view(0, 0)])[0].image, std_threshold=0.02, mean_threshold=0.02)


def test_unknown_scheduler_is_a_config_error_naming_the_key(tiny_model):
    with pytest.raises(ConfigError, match="unknown scheduler 'FastScheduler'.*DDIMScheduler"):
        DiffusersRenderer(config(tiny_model, scheduler="FastScheduler"), machine=CPU)


# ------------------------------------------------------------------------------------- identity noise


def test_identity_noise_share_changes_images_and_shares_noise_within_an_identity(tiny_model):
    same_prompt = "a photo of a man in a green jacket"
    views = [view(5, v, prompt=same_prompt) for v in range(2)]  # one identity, two view seeds
    independent = pixels(DiffusersRenderer(config(tiny_model), machine=CPU).render(views))
    half = pixels(DiffusersRenderer(config(tiny_model, identity_noise_share=0.5), machine=CPU).render(views))
    full = pixels(DiffusersRenderer(config(tiny_model, identity_noise_share=1.0), machine=CPU).render(views))
    assert not np.array_equal(independent[0], half[0])  # the share changes what is rendered
    assert not np.array_equal(independent[0], independent[1])
    # Fully shared noise and the same prompt: both views start from the same latents, so they coincide.
    np.testing.assert_array_equal(full[0], full[1])
    # A half share pulls the two views together compared with independent noise.
    gap = lambda a, b: np.abs(a.astype(float) - b.astype(float)).mean()  # noqa: E731
    assert gap(*half) < gap(*independent)


def test_identity_noise_mix_is_variance_preserving(tiny_model):
    renderer = DiffusersRenderer(
        config(tiny_model, height=256, width=128, identity_noise_share=0.7), machine=CPU
    )
    noise, _ = renderer.initial_noise(view(1, 0), attempt=0)
    assert noise.shape == (4, 128, 64)  # latent channels, height / 2, width / 2 for the tiny VAE
    assert abs(float(noise.std()) - 1.0) < 0.02 and abs(float(noise.mean())) < 0.02


# -------------------------------------------------------------------------------- blank re-seeding


class BlackFirst:
    """A stub around a real pipeline: its first `black_calls` calls return all-black images
    (or, with `nsfw`, the real images flagged as NSFW, as a safety checker reports them)."""

    def __init__(self, pipe, black_calls: int = 1, nsfw: bool = False):
        self._pipe, self.black_calls, self.nsfw = pipe, black_calls, nsfw
        self.calls: list[int] = []  # batch size of every call

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kwargs):
        out = self._pipe(**kwargs)
        self.calls.append(len(out.images))
        if len(self.calls) > self.black_calls:
            return out
        if self.nsfw:
            return SimpleNamespace(images=out.images, nsfw_content_detected=[True] * len(out.images))
        return SimpleNamespace(images=torch.zeros_like(out.images), nsfw_content_detected=None)


def test_a_black_output_is_re_rendered_alone_with_a_bumped_seed(tiny_model):
    views = [view(6, 0), view(6, 1)]
    pipe = build_tiny_diffusion_pipeline(0)
    stub = BlackFirst(pipe, black_calls=1)
    out = DiffusersRenderer(config(tiny_model), pipeline=stub, machine=CPU).render(views)
    assert [r.attempts for r in out] == [2, 2]
    assert stub.calls == [2, 1, 1]  # the batch, then each blank image alone
    # Each retried image is exactly what a clean render of that view with the bumped seed gives.
    clean = DiffusersRenderer(config(tiny_model, batch_size=1), pipeline=pipe, machine=CPU)
    for v, rendered in zip(views, out, strict=True):
        bumped = ViewSpec(**{**v.__dict__, "seed": bumped_seed(v.seed, 1)})
        np.testing.assert_array_equal(np.asarray(rendered.image), pixels(clean.render([bumped]))[0])
        assert not is_blank(rendered.image, std_threshold=0.02, mean_threshold=0.02)


def test_nsfw_flag_triggers_a_re_render_too(tiny_model):
    stub = BlackFirst(build_tiny_diffusion_pipeline(0), black_calls=1, nsfw=True)
    out = DiffusersRenderer(config(tiny_model), pipeline=stub, machine=CPU).render([view(7, 0)])
    assert out[0].attempts == 2 and stub.calls == [1, 1]


def test_retries_are_bounded_and_the_last_image_is_kept(tiny_model, caplog):
    stub = BlackFirst(build_tiny_diffusion_pipeline(0), black_calls=100)
    renderer = DiffusersRenderer(config(tiny_model, max_blank_retries=2), pipeline=stub, machine=CPU)
    out = renderer.render([view(8, 0)])
    assert out[0].attempts == 3 and stub.calls == [1, 1, 1]
    assert "p000008_v000 is still blank" in caplog.text


def test_bumped_seeds_are_deterministic_distinct_and_in_range():
    seeds = [bumped_seed(123, k) for k in range(50)]
    assert seeds[0] == 123 and len(set(seeds)) == 50
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds == [bumped_seed(123, k) for k in range(50)]


def test_is_blank_spots_black_and_flat_images_but_not_dark_textured_ones():
    rng = np.random.default_rng(0)
    assert is_blank(Image.new("RGB", (8, 8)), std_threshold=0.02, mean_threshold=0.02)
    assert is_blank(Image.new("RGB", (8, 8), (128, 128, 128)), std_threshold=0.02, mean_threshold=0.02)
    dark = Image.fromarray(rng.integers(0, 60, (16, 8, 3), dtype=np.uint8))
    assert not is_blank(dark, std_threshold=0.02, mean_threshold=0.02)


# ------------------------------------------------------------------------------------ bad models


def test_missing_model_folder_is_a_user_error(tmp_path):
    missing = str(tmp_path / "no-such-tiny")
    with pytest.raises(UserError, match="no-such-tiny' does not exist.*dppp models tiny-diffusion"):
        DiffusersRenderer(DiffusersRendererConfig(model=missing), machine=CPU)


def test_folder_that_is_not_a_pipeline_is_a_user_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(UserError, match="not a diffusers pipeline folder"):
        DiffusersRenderer(DiffusersRendererConfig(model=str(tmp_path)), machine=CPU)


def test_hub_id_missing_from_the_local_cache_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = DiffusersRendererConfig(model="no-such-org/no-such-model", local_files_only=True)
    with pytest.raises(UserError, match="'no-such-org/no-such-model' is neither a local folder nor found in"):
        DiffusersRenderer(cfg, machine=CPU)


def test_a_relative_path_that_looks_like_a_hub_id_names_both_places(tmp_path, monkeypatch):
    # "runs/tiny-diffusion" could be either; when neither exists the message says so and how to build it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="neither a local folder .build it with `dppp models tiny-diffusion"):
        DiffusersRenderer(DiffusersRendererConfig(model="runs/tiny-diffusion"), machine=CPU)


def test_cuda_only_request_is_refused_before_loading_when_configured_so(tiny_model):
    with pytest.raises(ConfigError, match="generate.renderer.dtype=fp16"):
        DiffusersRenderer(config(tiny_model, dtype="fp16", on_unsupported="refuse"), machine=CPU)


def test_cuda_only_request_is_downgraded_with_a_logged_warning(tiny_model, caplog):
    renderer = DiffusersRenderer(config(tiny_model, attention="xformers"), machine=CPU)
    assert renderer.runtime.attention == "sdpa"
    assert "generate.renderer.attention=xformers: xformers only runs on CUDA" in caplog.text


# ----------------------------------------------------------------------------------- CLI and config


def test_cli_builds_the_tiny_pipeline_and_refuses_to_overwrite(tmp_path, capsys):
    from dppp.cli import main

    out = tmp_path / "tiny"
    assert main(["models", "tiny-diffusion", str(out)]) == 0
    assert (out / "model_index.json").is_file() and (out / "unet" / "config.json").is_file()
    assert f"saved to {out}" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert main(["models", "tiny-diffusion", str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["models", "tiny-diffusion", str(out), "--overwrite", "--seed", "1"]) == 0


def test_same_seed_builds_byte_identical_weights(tmp_path, tiny_model):
    rebuilt = build_tiny_diffusion(tmp_path / "again")
    for part in ("unet", "vae", "text_encoder"):
        (weights,) = (tiny_model / part).glob("*.safetensors")
        assert (rebuilt / part / weights.name).read_bytes() == weights.read_bytes()


def test_tiny_diffusion_config_loads_and_renders(tiny_model):
    from dppp.config import load_experiment

    experiment = load_experiment(
        REPO / "configs" / "tiny-diffusion.yaml", [f"generate.renderer.model={tiny_model}"]
    )
    renderer_config = experiment.generate.renderer
    assert renderer_config.kind == "diffusers" and renderer_config.height > renderer_config.width
    default = DiffusersRendererConfig(model="org/model")
    assert default.height > default.width  # a tall portrait by default
    # The config's prompts fit the tiny model: its token budget is counted with the model's own tokenizer.
    from dppp.pipeline.prompting import prompt_engine

    views = prompt_engine(experiment.generate).views(0)[:2]
    out = DiffusersRenderer(renderer_config, machine=CPU).render(views)
    assert [r.image.size for r in out] == [(renderer_config.width, renderer_config.height)] * 2
    assert not np.array_equal(*pixels(out))


def test_geneperson_config_asks_for_a_real_model_in_half_precision():
    from dppp.config import load_experiment

    renderer_config = load_experiment(REPO / "configs" / "geneperson.yaml").generate.renderer
    assert renderer_config.kind == "diffusers" and "/" in renderer_config.model
    assert (renderer_config.dtype, renderer_config.attention) == ("bf16", "sdpa")
    assert (renderer_config.compile, renderer_config.channels_last, renderer_config.batch_size) == (
        True,
        True,
        "auto",
    )
    assert (renderer_config.height, renderer_config.width) == (512, 256)
    # On this CPU-only machine the same config still resolves, downgraded with warnings (not refused).
    from dppp.pipeline.renderers.diffusers_runtime import select_runtime

    runtime = select_runtime(renderer_config, cuda_available=False, xformers_available=False)
    assert (runtime.device, runtime.dtype, runtime.attention) == ("cpu", "fp32", "sdpa")
    assert len(runtime.warnings) == 3  # dtype, compile, channels_last


# ------------------------------------------------------------------- the GPU fast path, checked on CPU


def test_pixels_are_exactly_those_of_the_pipelines_own_pil_conversion(tiny_model):
    """The renderer converts to uint8 on the device; the values must be diffusers' own, bit for bit."""
    renderer = DiffusersRenderer(config(tiny_model, batch_size=2), machine=CPU)
    views = [view(4, 0), view(4, 1)]
    drawn = [renderer.initial_noise(v, 0) for v in views]
    with torch.inference_mode():
        reference = renderer.pipe(
            prompt=[v.prompt for v in views],
            num_inference_steps=TINY["steps"],
            guidance_scale=TINY["guidance"],
            height=TINY["height"],
            width=TINY["width"],
            latents=torch.stack([noise for noise, _ in drawn]),
            generator=[generator for _, generator in drawn],
            output_type="pil",
        ).images
    for ours, theirs in zip(renderer.render(views), reference, strict=True):
        np.testing.assert_array_equal(np.asarray(ours.image), np.asarray(theirs))


def test_blank_flags_on_the_device_agree_with_is_blank():
    rng = np.random.default_rng(0)
    images = [
        np.zeros((64, 32, 3), np.uint8),  # black
        np.full((64, 32, 3), 128, np.uint8),  # flat grey
        rng.integers(0, 40, (64, 32, 3), dtype=np.uint8),  # dark but textured
        rng.integers(0, 256, (64, 32, 3), dtype=np.uint8),  # noise
        np.full((64, 32, 3), 3, np.uint8),  # almost black
    ]
    flags = blank_flags(torch.from_numpy(np.stack(images)), std_threshold=0.02, mean_threshold=0.02)
    expected = [is_blank(Image.fromarray(im), std_threshold=0.02, mean_threshold=0.02) for im in images]
    assert flags.tolist() == expected == [True, True, False, False, True]


def test_fixed_shape_pads_every_call_to_the_batch_size_and_drops_the_padding(tiny_model, monkeypatch):
    """Compiled runs keep one graph: a short batch (or a re-render) is padded with its last view."""
    pipe = build_tiny_diffusion_pipeline(0)
    stub = BlackFirst(pipe, black_calls=0)
    renderer = DiffusersRenderer(config(tiny_model, batch_size=4), pipeline=stub, machine=CPU)
    monkeypatch.setattr(DiffusersRenderer, "fixed_shape", property(lambda self: True))
    views = [view(5, v) for v in range(5)]
    out = renderer.render(views)
    assert len(out) == 5 and stub.calls == [4, 4]  # 4, then 1 view padded to 4
    # The padded image is what a batch of its own copies gives: padding never changes a kept image.
    alone = DiffusersRenderer(config(tiny_model, batch_size=4), pipeline=pipe, machine=CPU)
    np.testing.assert_array_equal(np.asarray(out[4].image), pixels(alone.render([views[4]] * 4))[0])


def test_auto_batch_size_is_probed_before_rendering_and_then_fixed(tiny_model):
    renderer = DiffusersRenderer(config(tiny_model, batch_size="auto", max_batch_size=2), machine=CPU)
    with pytest.raises(RuntimeError, match="choose_batch_size"):
        renderer.render([view(0, 0)])
    result = renderer.choose_batch_size()
    assert result.chosen in (1, 2) and set(result.images_per_s) <= {1, 2}
    assert renderer.batch_size == result.chosen == renderer.describe()["batch_size"]
    assert len(renderer.render([view(0, v) for v in range(3)])) == 3


def test_auto_and_bad_batch_sizes_in_the_config():
    assert DiffusersRendererConfig(model="m", batch_size="auto").batch_size == "auto"
    assert DiffusersRendererConfig(model="m", batch_size="8").batch_size == 8
    for bad in (0, "big"):
        with pytest.raises(ValueError, match="batch_size"):
            DiffusersRendererConfig(model="m", batch_size=bad)


def test_describe_is_strict_json_even_with_an_infinite_scheduler_setting(tiny_model):
    """DPMSolverMultistepScheduler's lambda_min_clipped is -inf, which strict JSON (shard members) rejects."""
    renderer = load_renderer(config(tiny_model, scheduler="DPMSolverMultistepScheduler"))
    info = json.loads(json.dumps(renderer.describe(), allow_nan=False))
    assert info["scheduler"]["config"]["lambda_min_clipped"] == "-inf"
