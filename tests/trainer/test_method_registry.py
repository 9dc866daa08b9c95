"""The method registry (trainer/methods/registry.py): a method defined in tests/ (tests/helpers/toy_method.py)
plus its registry entry is all the training loop needs; it trains through the real loop (Worker.run, in
process: a local session in place of Ray Train's) and its checkpoints round-trip under its name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dppp.foundation.errors import ConfigError
from dppp.trainer.methods.config import ModelConfig
from dppp.trainer.methods.registry import (
    BotWeights,
    MethodSpec,
    PdmWeights,
    method_names,
    method_spec,
    register,
    unregister,
)
from tests.helpers.toy_method import SPEC, CentresWeights
from tests.trainer.test_data import write_dataset
from tests.trainer.test_train import tiny_config


@pytest.fixture
def toy_registered():
    register(SPEC)
    try:
        yield SPEC
    finally:
        unregister(SPEC.name)


class LocalSession:
    """Rank 0 of 1 on the CPU: reports kept in memory, each checkpoint copied under `folder`, and a
    resume from `resume_from` (a checkpoint folder) when given."""

    def __init__(self, folder: Path, resume_from: Path | None = None):
        self.rank, self.world = 0, 1
        self.folder, self.resume_from = folder, resume_from
        self.reports: list[tuple[dict, Path | None]] = []

    def device(self, use_gpu: bool) -> torch.device:
        return torch.device("cpu")

    def resume_checkpoint(self, local: Path) -> str | None:
        if self.resume_from is None:
            return None
        shutil.copytree(self.resume_from, local)
        return self.resume_from.name

    def report(self, metrics: dict, folder: str | None) -> None:
        kept = None
        if folder is not None:
            kept = self.folder / f"checkpoint_{len(self.reports):03d}"
            shutil.copytree(folder, kept)
        self.reports.append((metrics, kept))


def run_worker(config, data, out: Path, session: LocalSession) -> None:
    from dppp.trainer.training.loop import Worker

    Worker(config, data, str(out), None, session=session).run()


def test_the_built_in_methods_are_registered_with_their_old_weights():
    assert set(method_names()) >= {"bot", "clipreid", "pdm"}
    assert method_spec("pdm").phases == (1, 2) and method_spec("bot").phases == (2,)
    assert method_spec("pdm").style_label_phases == (1,) and not method_spec("clipreid").style_label_phases
    # The defaults the flat LossWeights had, each method now its own model.
    assert ModelConfig(method="pdm").weights == PdmWeights()
    assert PdmWeights().model_dump() == {
        **dict.fromkeys(("id", "triplet", "align", "content", "style", "decorrelation", "i2t"), 1.0),
        **dict.fromkeys(("adversarial", "word_norm", "style_i2t"), 0.0),
    }
    assert ModelConfig(method="clipreid").weights.model_dump() == {
        "id": 1,
        "triplet": 1,
        "prompt": 1,
        "i2t": 1,
    }
    # One flat `weights:` section serves every method: another method's keys are accepted and dropped.
    bot = ModelConfig(method="bot", weights={"triplet": 0.5, "align": 0.0, "prompt": 2.0})
    assert bot.weights == BotWeights(triplet=0.5)
    assert ModelConfig.model_validate(json.loads(bot.model_dump_json())) == bot


def test_weight_and_method_errors_name_the_key():
    from dppp.config import load_experiment

    for override, message in {
        "train.model.weights.bogus=1": "bogus: Extra inputs are not permitted",
        "train.model.weights.align=-1": "align: Input should be greater than or equal to 0",
        "train.model.method=toy_centres": "unknown method 'toy_centres'",
    }.items():
        with pytest.raises(ConfigError, match=message):
            load_experiment(None, [override])


def test_an_inconsistent_entry_is_refused(toy_registered):
    with pytest.raises(ValueError, match=r"losses \['extra'\] have no field in CentresWeights"):
        register(MethodSpec("toy_bad", SPEC.model, (1,), {1: ("centre", "extra")}, CentresWeights))
    with pytest.raises(ValueError, match="already registered"):
        register(MethodSpec(SPEC.name, SPEC.model, (2,), {2: ("id",)}, CentresWeights))
    with pytest.raises(ValueError, match="ascending"):
        register(MethodSpec("toy_bad", SPEC.model, (2, 1), {1: (), 2: ()}, CentresWeights))
    with pytest.raises(ValueError, match="1 and/or 2"):
        register(MethodSpec("toy_bad", SPEC.model, (1, 3), {1: (), 3: ()}, CentresWeights))
    assert "toy_bad" not in method_names()


def test_a_method_from_tests_trains_through_the_real_loop_and_resumes(toy_registered, tmp_path):
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.methods.checkpoint import load_checkpoint, read_state

    config = tiny_config(
        model={"method": "toy_centres", "weights": {"centre": 2.0, "align": 0.0}},
        phase1={"epochs": 2, "lr": 5e-2},
        phase2={"epochs": 1, "lr": 1e-3, "warmup_epochs": 0},
        log_every_steps=1,
    )
    assert config.model.weights == CentresWeights(centre=2.0)
    data = open_training_data([write_dataset(str(tmp_path / "ds"), n_ids=8, ids_per_shard=4)])
    out = tmp_path / "run"
    session = LocalSession(tmp_path / "reported")
    run_worker(config, data, out, session)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("toy_prepared") == 1
    steps = [r for r in records if r["kind"] == "step"]
    phase1 = [r for r in steps if r["phase"] == 1]
    assert len(phase1) >= 4 and {r["phase"] for r in steps} == {1, 2}
    # The declared monitored figure is logged as itself, the losses under loss/ (and only those).
    assert "centre_norm" in phase1[0] and "loss/centre_norm" not in phase1[0]
    assert phase1[0]["loss"] == pytest.approx(2.0 * phase1[0]["loss/centre"], rel=1e-5)
    assert {"loss/id", "loss/triplet"} <= set(steps[-1]) and "loss/centre" not in steps[-1]
    # Phase 1 learns the centres: its loss goes down.
    assert phase1[-1]["loss/centre"] < 0.8 * phase1[0]["loss/centre"]

    # Every reported checkpoint and final/ carry the method's name and load back as its model.
    reported = [folder for _metrics, folder in session.reports if folder is not None]
    assert reported and {read_state(f).method for f in reported} == {"toy_centres"}
    entering_2 = next(f for m, f in session.reports if m["kind"] == "phase" and m["phase"] == 2)
    at_phase_2, _ = load_checkpoint(entering_2, expected_method="toy_centres")
    final, state = load_checkpoint(out / "final", expected_method="toy_centres")
    assert state.phase == 2 and type(final).__name__ == "Centres" and final.phase == 2
    # Phase 2 moves the image encoder and no longer the centres (its trainable groups).
    assert torch.equal(final.centres, at_phase_2.centres)
    vision = "backbone.clip.vision_model.post_layernorm.weight"
    assert not torch.equal(final.state_dict()[vision], at_phase_2.state_dict()[vision])

    # A rerun from the last epoch's checkpoint, one phase-2 epoch more: it resumes there, same method.
    last = reported[-1]
    longer = config.model_copy(update={"phase2": config.phase2.model_copy(update={"epochs": 2})})
    again = LocalSession(tmp_path / "reported-again", resume_from=last)
    run_worker(longer, data, tmp_path / "run2", again)
    start = json.loads((tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["resumed"] and start["step"] == read_state(last).step and start["phase"] == 2
    assert read_state(tmp_path / "run2" / "final").step > start["step"]
