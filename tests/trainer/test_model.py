"""The stage-2 model: shapes, what trains in which phase, placeholder injection, backbone loading."""

from __future__ import annotations

import pytest
import torch

from dppp.foundation.errors import ConfigError, DataError
from dppp.trainer.methods.model import build_model
from dppp.trainer.methods.text_prompts import encode_prompt, inject
from tests.helpers.toy_batch import STYLE_VOCAB, toy_batch, toy_model_config

METHOD_PHASES = [("pdm", 1), ("pdm", 2), ("clipreid", 1), ("clipreid", 2), ("bot", 2)]
LOSS_NAMES = {
    ("pdm", 1): {"align", "content", "style", "decorrelation"},
    ("clipreid", 1): {"prompt"},
    ("pdm", 2): {"id", "triplet", "i2t"},
    ("clipreid", 2): {"id", "triplet", "i2t"},
    ("bot", 2): {"id", "triplet"},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch():
    return toy_batch(identities=3, views=4)


def model_in_phase(method, phase, batch):
    model = build_model(toy_model_config(method), 3, STYLE_VOCAB)
    model.set_phase(phase)
    if method == "pdm" and phase == 2:
        model.build_identity_bank([batch])
    return model.train()


def intended(name: str, method: str, phase: int) -> bool:
    """The parameters each phase is meant to train, written out independently of the model code."""
    if phase == 1:
        if method == "pdm":
            return name.split(".")[0] in ("style_inversion", "content_inversion", "style_heads")
        return name == "prompt_context"
    image_encoder = name.startswith(("backbone.clip.vision_model.", "backbone.clip.visual_projection."))
    return image_encoder or name in ("bnneck.weight", "classifier.weight")


@pytest.mark.parametrize("method,phase", METHOD_PHASES)
def test_output_shapes_and_loss_names(method, phase, batch):
    model = model_in_phase(method, phase, batch)
    embeddings = model.encode_images(batch["pixel_values"])
    assert embeddings.shape == (12, 32)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(12), atol=1e-5)
    assert model.training  # encode_images restores the mode it found
    total, parts = model.loss(batch)
    assert total.dim() == 0 and total.requires_grad and torch.isfinite(total)
    assert set(parts) == LOSS_NAMES[(method, phase)]
    assert all(not value.requires_grad for value in parts.values())


@pytest.mark.parametrize("method,phase", METHOD_PHASES)
def test_each_phase_trains_exactly_its_parameters(method, phase, batch):
    model = model_in_phase(method, phase, batch)
    names = {name for name, _ in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in names if intended(name, method, phase)}
    assert not any(name.startswith("backbone.clip.text_model.") for name in trainable)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # An optimizer over ALL parameters: frozen ones must stay put because they get no gradient at all.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    total, _ = model.loss(batch)
    total.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        if name in trainable:
            assert param.grad is not None, f"{name} got no gradient"
            assert not torch.equal(param, before[name]), f"{name} did not change"
        else:
            assert param.grad is None, f"frozen {name} got a gradient"
            assert torch.equal(param, before[name]), f"frozen {name} changed"


def test_changing_s_changes_the_full_prompt_only(batch):
    model = build_model(toy_model_config("pdm"), 3, STYLE_VOCAB).eval()
    generator = torch.Generator().manual_seed(0)
    content = torch.randn(4, 32, generator=generator)
    style_a, style_b, other_content = torch.randn(3, 4, 32, generator=generator)
    with torch.no_grad():
        full_a, content_a = model.prompt_features(style_a, content)
        full_b, content_b = model.prompt_features(style_b, content)
        full_c, content_c = model.prompt_features(style_a, other_content)
    assert not torch.allclose(full_a, full_b, atol=1e-4)
    assert torch.equal(content_a, content_b)
    assert not torch.allclose(full_a, full_c, atol=1e-4) and not torch.allclose(
        content_a, content_c, atol=1e-4
    )


def test_injected_word_embedding_equals_the_word_itself():
    """Injecting the token embedding of a real word must give exactly the text feature of the sentence
    that contains that word: the placeholder is replaced in place and the end-of-text pooling is right."""
    model = build_model(toy_model_config("pdm"), 3, STYLE_VOCAB).eval()
    backbone, tokenizer = model.backbone, model.backbone.tokenizer
    (red_id,) = tokenizer("red", add_special_tokens=False)["input_ids"]
    red = backbone.token_embedding.weight[red_id].detach().expand(2, -1)
    ids, embeds = inject(model.content_prompt, backbone.token_embedding, {"C": red})
    slot = model.content_prompt.slots["C"]
    assert torch.equal(embeds[:, slot[0]], red)
    others = [i for i in range(ids.shape[1]) if i != int(slot[0])]
    assert torch.equal(embeds[:, others], backbone.token_embedding(ids)[:, others])
    plain = torch.tensor([tokenizer("a photo of a red person")["input_ids"]] * 2)
    with torch.no_grad():
        injected = encode_prompt(backbone, model.content_prompt, {"C": red})
        reference = backbone.encode_text(plain, backbone.token_embedding(plain))
    assert torch.allclose(injected, reference, atol=1e-6)


def test_position_embeddings_are_interpolated_to_the_reid_grid():
    model = build_model(toy_model_config("bot", image_size=(64, 32)), 3)
    embeddings = model.backbone.clip.vision_model.embeddings
    assert embeddings.grid == (8, 4)
    assert embeddings.position_embedding.weight.shape == (1 + 8 * 4, 32)
    with pytest.raises(ValueError, match="built for 64x32"):
        model.encode_images(torch.zeros(1, 3, 64, 64))


def test_loads_clip_from_a_local_folder_like_a_hub_model(tmp_path, batch):
    from dppp.trainer.clip.tiny_clip import build_tiny_clip

    config = toy_model_config("pdm")
    clip, tokenizer = build_tiny_clip(config.tiny, config.image_size[0], seed=config.init_seed)
    clip.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    from_folder = build_model(config.model_copy(update={"backbone": str(tmp_path)}), 3, STYLE_VOCAB).eval()
    built = build_model(config, 3, STYLE_VOCAB).eval()
    assert torch.equal(
        from_folder.encode_images(batch["pixel_values"]), built.encode_images(batch["pixel_values"])
    )
    words = built.pseudo_words(built.backbone.encode_image(batch["pixel_values"]))
    with torch.no_grad():
        assert torch.allclose(
            from_folder.prompt_features(*words)[0], built.prompt_features(*words)[0], atol=1e-6
        )


def test_same_config_builds_identical_models():
    a = build_model(toy_model_config("clipreid"), 3).state_dict()
    b = build_model(toy_model_config("clipreid"), 3).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_clear_errors(batch, tmp_path):
    with pytest.raises(ConfigError, match="style attributes \\['camid'\\] have no vocabulary"):
        build_model(toy_model_config("pdm"), 3, {"illumination": 2, "weather": 2})
    with pytest.raises(DataError, match="at least 2 identities"):
        build_model(toy_model_config("bot"), 1)
    with pytest.raises(ConfigError, match="backbone folder .*missing' does not exist"):
        build_model(toy_model_config("bot", backbone=str(tmp_path / "missing")), 3)
    bot = build_model(toy_model_config("bot"), 3)
    with pytest.raises(ValueError, match="has phases \\[2\\], not 1"):
        bot.set_phase(1)
    pdm = build_model(toy_model_config("pdm"), 3, STYLE_VOCAB)
    pdm.set_phase(2)
    with pytest.raises(RuntimeError, match="build_identity_bank"):
        pdm.loss(batch)
    pdm.set_phase(1)
    with pytest.raises(ValueError, match="lacks 'weather'"):
        pdm.loss({**batch, "style": {"illumination": batch["style"]["illumination"]}})
    with pytest.raises(ValueError, match="must lie in 0..2"):
        pdm.loss({**batch, "pids": batch["pids"] + 1})


def test_model_config_is_validated_in_the_experiment_yaml(tmp_path):
    from dppp.config import load_experiment

    config = load_experiment(None, ["train.model.method=clipreid", "train.model.triplet_margin=null"])
    assert config.train.model.method == "clipreid" and config.train.model.triplet_margin is None
    problems = {
        "train.model.method=arcface": "train.model.method",
        "train.model.content_template=a photo of a [S] person": "content_template must contain [C]",
        "train.model.image_size=[250,128]": "multiple of tiny.patch_size 16",
        "train.model.tiny.num_heads=3": "not divisible by num_heads",
        "train.model.style_attributes=[scene, scene]": "distinct",
        "train.model.temperature=0.1": "unknown key",
        "train.phase2.lr=0": "train.phase2.lr",
    }
    for override, message in problems.items():
        with pytest.raises(ConfigError, match=message.replace("[", "\\[")):
            load_experiment(None, [override])
