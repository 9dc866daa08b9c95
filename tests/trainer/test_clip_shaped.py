"""`dppp models clip-vit-b16-shaped`: CLIP ViT-B/16's architecture, random weights, offline."""

from __future__ import annotations

import pytest


def test_the_config_is_clip_vit_b16_with_149_6_m_parameters_and_a_matching_tokenizer():
    import torch
    from transformers import CLIPModel

    from dppp.trainer.clip.clip_shaped import (
        PARAMETERS,
        VOCAB_SIZE,
        clip_vit_b16_config,
        clip_vit_b16_tokenizer,
    )

    tokenizer = clip_vit_b16_tokenizer()
    assert len(tokenizer) == VOCAB_SIZE
    # Whole words: a prompt costs about one token per word, as with CLIP's vocabulary.
    ids = tokenizer("a man in a red top walking")["input_ids"]
    assert len(ids) == 2 + 7 and ids[0] == tokenizer.bos_token_id
    with torch.device("meta"):  # the shapes without 600 MB of random numbers
        model = CLIPModel(clip_vit_b16_config(tokenizer))
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    assert round(PARAMETERS / 1e6, 1) == 149.6
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size) == (768, 12, 16)


def test_an_existing_folder_is_refused(tmp_path, capsys):
    from dppp.cli import main

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert main(["models", "clip-vit-b16-shaped", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_the_folder_loads_as_a_clip_backbone(tmp_path):
    """Saved (600 MB, fp32) and loaded as a training run loads its backbone."""
    from transformers import AutoTokenizer, CLIPModel

    from dppp.cli import main
    from dppp.trainer.clip.backbone import check_backbone
    from dppp.trainer.clip.clip_shaped import PARAMETERS

    out = tmp_path / "clip-b16"
    assert main(["models", "clip-vit-b16-shaped", str(out)]) == 0
    model = CLIPModel.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    assert len(AutoTokenizer.from_pretrained(out)) == 49408
    check_backbone(str(out))  # what `dppp train` checks before Ray starts
