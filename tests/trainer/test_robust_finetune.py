"""Robust fine-tuning options of phase 2 (trainer/training/config.py `Phase2Schedule`): `backbone_lr_scale`
(the pretrained tower at a fraction of the heads' lr) and `wise_alpha` (WiSE-FT: final/'s backbone
interpolated towards the weights the run started from, trainer/methods/wise.py). Short in-process runs of
the real training loop (a local session in place of Ray Train's) on a tiny CLIP."""

from __future__ import annotations

import pytest
import torch

from dppp.trainer.methods.checkpoint import load_checkpoint
from dppp.trainer.methods.model import build_model
from dppp.trainer.methods.wise import interpolate_weights, starting_backbone_state
from tests.trainer.test_data import write_dataset
from tests.trainer.test_method_registry import LocalSession
from tests.trainer.test_train import tiny_config

VISION = "backbone.clip.vision_model.post_layernorm.weight"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dppp.trainer.data.sources import open_training_data

    return open_training_data([write_dataset(str(tmp_path_factory.mktemp("robust") / "ds"), n_ids=8)])


def bot_config(**phase2):
    return tiny_config(
        model={"method": "bot"},
        phase2={"epochs": 2, "lr": 1e-3, "warmup_epochs": 1, **phase2},
        log_every_steps=1,
    )


def run(config, data, out, session) -> list[list[tuple[float, bool]]]:
    """Train; per optimizer step, each param group's (lr, whether it holds the tower's parameters)."""
    from dppp.trainer.training.loop import Worker

    seen: list[list[tuple[float, bool]]] = []

    class Recording(Worker):
        def step(self, wrapped, optimizer, scaler, batch):
            tower = {id(p) for n, p in wrapped.named_parameters() if ".backbone." in f".{n}"}
            seen.append([(g["lr"], id(g["params"][0]) in tower) for g in optimizer.param_groups])
            return super().step(wrapped, optimizer, scaler, batch)

    Recording(config, data, str(out), None, session=session).run()
    return seen


def test_backbone_lr_scale_gives_the_tower_a_fraction_of_the_heads_lr_and_resumes(data, tmp_path):
    steps = run(bot_config(backbone_lr_scale=0.1), data, tmp_path / "run", LocalSession(tmp_path / "rep"))
    assert len(steps) >= 4
    for groups in steps:
        (tower_lr, is_tower), (head_lr, is_head_tower) = groups
        assert is_tower and not is_head_tower
        assert head_lr > 0 and tower_lr == pytest.approx(0.1 * head_lr, rel=1e-12)
    assert len({groups[1][0] for groups in steps}) > 1  # warm-up and decay move both

    # Resumed inside phase 2 from the first epoch's checkpoint: the two groups restore and keep the scale.
    first = LocalSession(tmp_path / "rep-1")
    run(bot_config(backbone_lr_scale=0.1, epochs=1), data, tmp_path / "run1", first)
    last = [folder for _m, folder in first.reports if folder is not None][-1]
    resumed = run(
        bot_config(backbone_lr_scale=0.1), data, tmp_path / "run2", LocalSession(tmp_path / "rep-2", last)
    )
    assert resumed and len(resumed) < len(steps)
    for (tower_lr, _), (head_lr, _) in resumed:
        assert tower_lr == pytest.approx(0.1 * head_lr, rel=1e-12)


def test_the_default_scale_keeps_one_group_as_before(data, tmp_path):
    steps = run(bot_config(), data, tmp_path / "run", LocalSession(tmp_path / "rep"))
    assert steps and all(len(groups) == 1 for groups in steps)
    model = build_model(bot_config().model, data.num_classes, data.style_vocab)
    model.set_phase(2)
    plain = model.parameter_groups(1e-4)
    assert all(isinstance(p, torch.nn.Parameter) for p in plain)  # a plain list: AdamW's one group
    groups = model.parameter_groups(1e-4, backbone_lr_scale=0.5)
    assert [g["lr_scale"] for g in groups] == [0.5, 1.0]
    assert sum(len(g["params"]) for g in groups) == len(plain)


def test_interpolate_weights_moves_the_tower_between_start_and_fine_tuned(data):
    model = build_model(bot_config().model, data.num_classes, data.style_vocab)
    start = starting_backbone_state(model)
    assert VISION in start and all(
        k.startswith(("backbone.clip.vision_model.", "backbone.clip.visual_projection.")) for k in start
    )
    assert not any("text_model" in k for k in start)  # phase 2 does not train it
    with torch.no_grad():  # stands in for fine-tuning
        generator = torch.Generator().manual_seed(0)
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator))
    tuned = {k: v.clone() for k, v in model.state_dict().items()}

    interpolate_weights(model, start, 1.0)
    assert all(torch.equal(v, tuned[k]) for k, v in model.state_dict().items())
    interpolate_weights(model, start, 0.5)
    now = model.state_dict()
    for key in start:
        assert torch.allclose(now[key], (tuned[key] + start[key]) / 2, atol=1e-6)
    assert torch.equal(now["classifier.weight"], tuned["classifier.weight"])
    assert torch.equal(now["bnneck.weight"], tuned["bnneck.weight"])
    interpolate_weights(model, start, 0.0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())

    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\], got 1.5"):
        interpolate_weights(model, start, 1.5)
    with pytest.raises(ValueError, match="starting weights"):
        interpolate_weights(model, {VISION: torch.zeros(3)}, 0.5)


def test_wise_alpha_writes_the_midpoint_into_final_only(data, tmp_path):
    session = LocalSession(tmp_path / "rep")
    out = tmp_path / "run"
    run(bot_config(wise_alpha=0.5), data, out, session)
    last = [folder for _m, folder in session.reports if folder is not None][-1]
    raw, _ = load_checkpoint(last)
    final, state = load_checkpoint(out / "final")
    assert state.config["train"]["phase2"]["wise_alpha"] == 0.5
    start = starting_backbone_state(raw)
    raw_state, final_state = raw.state_dict(), final.state_dict()
    assert not torch.allclose(raw_state[VISION], start[VISION])  # it trained
    for key, value in start.items():
        assert torch.allclose(final_state[key], (raw_state[key] + value) / 2, atol=1e-6)
    for key in ("classifier.weight", "bnneck.weight", "bnneck.running_mean"):
        assert torch.equal(final_state[key], raw_state[key])
