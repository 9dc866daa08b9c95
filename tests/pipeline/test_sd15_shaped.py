"""The SD1.5-shaped offline pipeline: SD 1.5's exact architecture, random weights, sane sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dppp.cli import main
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig
from dppp.pipeline.renderers.diffusers_renderer import DiffusersRenderer
from dppp.pipeline.renderers.diffusers_runtime import Machine
from dppp.pipeline.renderers.sd15_shaped import (
    build_sd15_shaped,
    build_sd15_shaped_pipeline,
    parameter_counts,
    text_config,
    unet_config,
    vae_config,
)
from dppp.prompts.spec import ViewSpec
from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = Machine(cuda_available=False, xformers_available=False)
SMALL = 0.1  # every width at a tenth: the same blocks, CI-sized


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return build_sd15_shaped(tmp_path_factory.mktemp("models") / "sd15", scale=SMALL, dtype="fp32")


def test_full_scale_has_sd15_parameter_counts_exactly():
    """Counted on the meta device: the real shape without allocating 4 GB."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer(model_max_length=77)
    with torch.device("meta"):
        networks = {
            "unet": UNet2DConditionModel(**unet_config()),
            "vae": AutoencoderKL(**vae_config()),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**text_config(tokenizer))),
        }
    counts = {name: sum(p.numel() for p in net.parameters()) for name, net in networks.items()}
    # Stable Diffusion 1.5's published networks: UNet 859.52 M, VAE 83.65 M, CLIP ViT-L/14 text 123.06 M.
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def test_small_scale_keeps_every_block_of_the_architecture(small_model):
    unet = json.loads((small_model / "unet" / "config.json").read_text())
    full = unet_config()
    for key in ("down_block_types", "up_block_types", "layers_per_block", "attention_head_dim"):
        assert unet[key] == list(full[key]) if isinstance(full[key], tuple) else unet[key] == full[key]
    assert unet["block_out_channels"] == [32, 64, 128, 128]  # a tenth of 320/640/1280/1280
    vae = json.loads((small_model / "vae" / "config.json").read_text())
    assert len(vae["block_out_channels"]) == 4 and vae["layers_per_block"] == 2
    text = json.loads((small_model / "text_encoder" / "config.json").read_text())
    assert (text["num_hidden_layers"], text["max_position_embeddings"]) == (12, 77)
    assert unet["cross_attention_dim"] == text["hidden_size"]


def test_same_seed_builds_byte_identical_weights(tmp_path, small_model):
    again = build_sd15_shaped(tmp_path / "again", scale=SMALL, dtype="fp32")
    for part in ("unet", "vae", "text_encoder"):
        (first,) = sorted((small_model / part).glob("*.safetensors"))
        (second,) = sorted((again / part).glob("*.safetensors"))
        assert first.read_bytes() == second.read_bytes(), part


def test_sampling_stays_bounded_and_images_are_never_blank(small_model):
    """A random UNet would drift the sampler's latents ~20x over 25 steps; the build keeps them at SD's scale."""
    import torch

    pipe = build_sd15_shaped_pipeline(0, SMALL)
    pipe.set_progress_bar_config(disable=True)
    stds = []

    def watch(_pipe, _step, _t, kwargs):
        stds.append(float(kwargs["latents"].std()))
        return kwargs

    with torch.inference_mode():
        pipe(
            ["a photo of a person"],
            num_inference_steps=25,
            guidance_scale=7.5,
            height=64,
            width=32,
            output_type="latent",
            callback_on_step_end=watch,
        )
    assert len(stds) == 25 and all(np.isfinite(stds))
    assert max(stds) < 3.0  # unit-scale latents throughout (an uncalibrated build ends near 20)

    renderer = DiffusersRenderer(
        DiffusersRendererConfig(model=str(small_model), height=64, width=32, steps=8, batch_size=3),
        machine=CPU,
    )
    views = [
        ViewSpec(
            pid=0,
            view=v,
            camid=0,
            seed=v,
            identity_seed=1,
            attributes={},
            prompt="a photo of a man in a red coat",
            negative_prompt="",
        )
        for v in range(3)
    ]
    rendered = renderer.render(views)
    assert [r.attempts for r in rendered] == [1, 1, 1]  # no blank re-render
    pixels = np.stack([np.asarray(r.image) for r in rendered]).astype(float)
    assert 20 < pixels.std() < 110 and 60 < pixels.mean() < 200


def test_parameter_counts_name_the_three_networks():
    counts = parameter_counts(build_sd15_shaped_pipeline(0, SMALL))
    assert set(counts) == {"unet", "vae", "text_encoder"} and all(n > 0 for n in counts.values())


def test_cli_builds_small_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "sd15"
    assert main(["models", "sd15-shaped", str(out), "--scale", "0.1", "--dtype", "fp32"]) == 0
    assert (out / "model_index.json").is_file() and "saved to" in capsys.readouterr().out
    assert main(["models", "sd15-shaped", str(out), "--scale", "0.1"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_rejects_an_unknown_dtype_and_a_scale_out_of_range(tmp_path, capsys):
    assert main(["models", "sd15-shaped", str(tmp_path / "a"), "--dtype", "fp8"]) == 2
    assert "--dtype must be fp32, fp16 or bf16" in capsys.readouterr().err
    assert main(["models", "sd15-shaped", str(tmp_path / "b"), "--scale", "1.5"]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
