"""PDM's phase-1 health report (trainer/methods/health.py): what it measures and when it warns."""

from __future__ import annotations

import math

import pytest
import torch

from dppp.trainer.methods.health import format_report, health_report, linear_probe, probe_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def features(identity: bool, n_ids: int = 24, views: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pids = torch.arange(n_ids).repeat_interleave(views)
    light = torch.randint(0, 4, (len(pids),), generator=g)
    centres = torch.randn(n_ids, 16, generator=g)
    noise = torch.randn(len(pids), 16, generator=g)
    style = torch.nn.functional.one_hot(light, 4).float() + 0.3 * torch.randn(len(pids), 4, generator=g)
    if identity:  # C and its prompt features follow the person
        content, text = centres[pids] + 0.3 * noise, centres[pids] + 0.3 * noise.roll(1, 1)
    else:  # C follows nothing, and every content prompt comes out the same
        content, text = noise, torch.ones(len(pids), 16) + 1e-4 * noise
    return dict(
        style=style, content=content, content_text=text, pids=pids, style_labels={"illumination": light}
    )


def test_a_content_word_with_identity_passes():
    report = health_report(content_loss=1.6, style_loss=0.5, batch_size=32, **features(identity=True))
    assert report["warning"] is None
    assert report["content_ratio"] == pytest.approx(1.6 / math.log(32))
    assert report["cosine_within"] > report["cosine_across"] + 0.5
    assert (
        report["probes"]["C"]["pid"]["accuracy"] > 0.9
        and report["probes"]["S"]["illumination"]["accuracy"] > 0.9
    )
    assert report["style_prior_entropy"] == pytest.approx(math.log(4), abs=0.05)


def test_a_content_word_without_identity_is_flagged():
    report = health_report(content_loss=3.5, style_loss=1.4, batch_size=32, **features(identity=False))
    assert "the content word carries no identity" in report["warning"]
    assert "1.01 x its chance level" in report["warning"] and "no closer than" in report["warning"]
    assert report["probes"]["C"]["pid"]["accuracy"] < 0.2
    assert "WARNING" in format_report(report)
    # Either symptom alone is enough: chance-level content loss with well separated prompts...
    flagged = health_report(content_loss=3.4, style_loss=None, batch_size=32, **features(identity=True))
    assert "chance level" in flagged["warning"] and "no closer" not in flagged["warning"]
    # ... or a low loss with prompts that do not tell identities apart.
    flagged = health_report(content_loss=1.0, style_loss=None, batch_size=32, **features(identity=False))
    assert "no closer than" in flagged["warning"] and "chance level" not in flagged["warning"]


def test_probes_are_scored_on_images_they_were_not_fit_on():
    pids = torch.tensor([0, 0, 0, 1, 1, 2])
    assert probe_split(pids).tolist() == [True, False, True, True, False, True]
    # Labels that are pure noise per image: a probe that memorised its fit half still scores ~chance.
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 64, generator=g), torch.randint(0, 2, (400,), generator=g)
    fit = torch.arange(400) % 2 == 0
    assert abs(linear_probe(x, y, fit)["accuracy"] - 0.5) < 0.1
