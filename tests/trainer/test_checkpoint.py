"""Checkpoints: safetensors + JSON round trip, optimizer state, and clear errors on any mismatch."""

from __future__ import annotations

import json

import pytest
import torch

from dppp.foundation.errors import DataError
from dppp.trainer.methods.checkpoint import (
    load_checkpoint,
    read_state,
    restore_model,
    restore_optimizer,
    save_checkpoint,
)
from dppp.trainer.methods.model import build_model
from dppp.trainer.training.config import TrainConfig
from tests.helpers.toy_batch import STYLE_VOCAB, toy_batch, toy_model_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch():
    return toy_batch(identities=3, views=2)


def trained_pdm(batch):
    """A PDM model in phase 2 with a built bank and one optimizer step taken (non-trivial state)."""
    model = build_model(toy_model_config("pdm"), 3, STYLE_VOCAB)
    model.set_phase(2)
    model.build_identity_bank([batch])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    total, _ = model.loss(batch)
    total.backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_gives_identical_outputs(tmp_path, batch):
    model, optimizer = trained_pdm(batch)
    config = TrainConfig(model=model.config)
    save_checkpoint(tmp_path, model, optimizer, step=7, config=config)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json",
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
    ]
    loaded, state = load_checkpoint(tmp_path, expected_method="pdm")
    assert (state.step, state.phase, state.method, state.num_classes) == (7, 2, "pdm", 3)
    assert state.style_vocab == STYLE_VOCAB and TrainConfig.model_validate(state.config) == config
    assert loaded.phase == 2 and torch.equal(loaded.identity_text, model.identity_text)
    assert torch.equal(
        loaded.encode_images(batch["pixel_values"]), model.encode_images(batch["pixel_values"])
    )
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.loss(batch)[0], loaded.loss(batch)[0])
    # The optimizer resumes exactly: one more step from both gives the same weights.
    resumed = torch.optim.AdamW(loaded.trainable_parameters(), lr=123.0)
    restore_optimizer(tmp_path, resumed)
    assert resumed.param_groups[0]["lr"] == 1e-3 and resumed.param_groups[0]["betas"] == (0.9, 0.999)
    for m, opt in ((model, optimizer), (loaded, resumed)):
        m.train()
        torch.manual_seed(0)
        opt.zero_grad()
        m.loss(batch)[0].backward()
        opt.step()
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_phase_one_clipreid_round_trip_without_optimizer(tmp_path, batch):
    model = build_model(toy_model_config("clipreid"), 3)
    save_checkpoint(tmp_path, model, step=0)
    loaded, state = load_checkpoint(tmp_path)
    assert state.phase == 1 and not state.has_optimizer
    assert torch.equal(loaded.prompt_context, model.prompt_context)
    with pytest.raises(DataError, match="holds no optimizer state"):
        restore_optimizer(tmp_path, torch.optim.Adam(loaded.trainable_parameters()))


def test_mismatches_are_clear_data_errors(tmp_path, batch):
    model, optimizer = trained_pdm(batch)
    save_checkpoint(tmp_path, model, optimizer, step=1)
    with pytest.raises(DataError, match="checkpoint of method 'pdm', expected 'bot'"):
        load_checkpoint(tmp_path, expected_method="bot")
    with pytest.raises(DataError, match="checkpoint of method 'pdm', the model is 'bot'"):
        restore_model(tmp_path, build_model(toy_model_config("bot"), 3))
    other = build_model(toy_model_config("pdm"), 5, STYLE_VOCAB)
    with pytest.raises(
        DataError, match=r"shape mismatch.*classifier.weight \(3, 32\) \(model has \(5, 32\)\)"
    ):
        restore_model(tmp_path, other)
    with pytest.raises(DataError, match="optimizer state of AdamW, not SGD"):
        restore_optimizer(tmp_path, torch.optim.SGD(model.trainable_parameters(), lr=0.1))
    model.set_phase(1)
    with pytest.raises(DataError, match="parameter groups differ"):
        restore_optimizer(tmp_path, torch.optim.AdamW(model.trainable_parameters()))

    meta_path = tmp_path / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 0}))
    with pytest.raises(DataError, match="format version 0; this dppp reads version 1"):
        load_checkpoint(tmp_path)
    meta_path.write_text(json.dumps(meta))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(DataError, match="does not match the sha256"):
        read_state(tmp_path)


def test_an_interrupted_save_leaves_nothing_loadable(tmp_path, batch):
    model = build_model(toy_model_config("bot"), 3)
    save_checkpoint(tmp_path, model, step=1)

    class Exploding(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            raise OSError("disk full")

    broken = build_model(toy_model_config("bot"), 3)
    broken.backbone = Exploding()
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, broken, step=2)
    with pytest.raises(DataError, match="no checkpoint.json"):
        load_checkpoint(tmp_path)
    with pytest.raises(DataError, match="no checkpoint.json"):
        load_checkpoint(tmp_path / "elsewhere")


def test_no_pickle_in_a_checkpoint(tmp_path, batch):
    model, optimizer = trained_pdm(batch)
    save_checkpoint(tmp_path, model, optimizer, step=3)
    for path in tmp_path.iterdir():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", f"{path.name} looks like a pickle or torch.save zip"


def test_same_config_and_steps_give_byte_identical_checkpoints(tmp_path, batch):
    folders = []
    for run in ("a", "b"):
        model, optimizer = trained_pdm(batch)
        folders.append(save_checkpoint(tmp_path / run, model, optimizer, step=1))
    for name in ("model.safetensors", "optimizer.safetensors", "optimizer.json", "checkpoint.json"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name


def _ray_snapshot(names: list[str]) -> dict:
    """Ray Train's checkpoint_manager_snapshot.json for checkpoints reported in this order (the fields Ray
    Train 2.x writes; the slow tests in tests/trainer/test_damaged_data.py run the real thing)."""
    results = [
        {"version": 0, "checkpoint_dir_name": name, "metrics": {"step": i}} for i, name in enumerate(names)
    ]
    return {
        "ray_version": "2.x",
        "checkpoint_results": results,
        "checkpoint_report_indices": list(range(len(names))),
        "latest_checkpoint_result": results[-1],
        "pending_training_results": [],
        "pending_validation_specs": [],
        "current_report_index": len(names),
        "validated_checkpoint_dir_names": [],
        "timed_out_validation_checkpoint_dir_names": [],
        "failed_validation_checkpoint_dir_names": [],
    }


def test_resume_skips_removed_and_damaged_checkpoints_and_names_them(tmp_path, batch):
    from dppp.trainer.training.resume import SNAPSHOT, prepare_resume

    model, optimizer = trained_pdm(batch)
    names = ["checkpoint_a", "checkpoint_b", "checkpoint_c", "checkpoint_d"]
    for step, name in enumerate(names, start=1):
        save_checkpoint(tmp_path / name, model, optimizer, step=step)
    (tmp_path / SNAPSHOT).write_text(json.dumps(_ray_snapshot(names)))
    assert prepare_resume(str(tmp_path), None) == []  # all sound: the snapshot is left alone
    # The newest truncated, the one before it removed by hand, the oldest without its commit marker.
    weights = tmp_path / "checkpoint_d" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    import shutil

    shutil.rmtree(tmp_path / "checkpoint_c")
    (tmp_path / "checkpoint_a" / "checkpoint.json").unlink()
    url = f"file://{tmp_path}"
    assert prepare_resume(str(tmp_path), None) == [
        f"skipped checkpoint {url}/checkpoint_c: its folder is gone",
        f"skipped checkpoint {url}/checkpoint_d: model.safetensors does not match the sha256 recorded in "
        "checkpoint.json (truncated or corrupted)",
        f"resuming from checkpoint {url}/checkpoint_b (step 2)",
    ]
    snapshot = json.loads((tmp_path / SNAPSHOT).read_text())
    kept = [r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]]
    assert kept == ["checkpoint_a", "checkpoint_b"] and snapshot["checkpoint_report_indices"] == [0, 1]
    assert snapshot["latest_checkpoint_result"]["checkpoint_dir_name"] == "checkpoint_b"
    assert weights.exists()  # a skipped checkpoint is kept for a post-mortem, only no longer resumed from
    # Nothing sound left: said, and the run starts again.
    (tmp_path / "checkpoint_b" / "optimizer.json").write_text("{}")
    assert prepare_resume(str(tmp_path), None) == [
        f"skipped checkpoint {url}/checkpoint_b: optimizer.json does not match the sha256 recorded in "
        "checkpoint.json (truncated or corrupted)",
        f"skipped checkpoint {url}/checkpoint_a: no checkpoint.json (its save was interrupted, or the folder "
        "was emptied)",
        "no sound checkpoint left: the run starts again from step 0",
    ]
    assert json.loads((tmp_path / SNAPSHOT).read_text())["latest_checkpoint_result"] is None
