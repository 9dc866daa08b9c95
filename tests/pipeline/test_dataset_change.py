"""What a generate run would do to the dataset at its output (pipeline/dataset_change.py): read-only
planning of resume, --extend, --repair and --overwrite, and its refusals. No Ray: dataset.json as
`dppp generate` writes it, on a real folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dppp.config import load_experiment
from dppp.dataset.records import write_dataset_manifest
from dppp.foundation.errors import SettingError
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.dataset_change import plan_change
from dppp.pipeline.generate import build_plan
from dppp.pipeline.leases import JobIdentity

ROOT = Path(__file__).resolve().parents[2]


def plan_of(out, **overrides):
    sets = [f"generate.out={out}"] + [f"generate.{k}={v}" for k, v in overrides.items()]
    return build_plan(load_experiment(ROOT / "configs" / "demo.yaml", sets).generate)


def change(out, plan, **flags):
    return plan_change(plan, open_storage(str(out)), job=JobIdentity.current(), **flags)


@pytest.fixture
def six_identities(tmp_path):
    """dataset.json of a 6-identity dataset in shards of 4: shard 0 full, shard 1 holding 2 of 4."""
    write_dataset_manifest(
        open_storage(str(tmp_path)), plan_of(tmp_path, identities=6, ids_per_shard=4).manifest()
    )
    return tmp_path


@pytest.mark.parametrize(
    "identities, reopen, said",
    [
        (10, [1], "6 -> 10 identities; 1 new shard(s) (2..2), shard 1 rendered again (it held 2 of 4), 1 shard(s) untouched"),
        (7, [1], "6 -> 7 identities; no new shard, shard 1 rendered again (it held 2 of 4), 1 shard(s) untouched"),
    ],
)  # fmt: skip
def test_extend_reopens_only_a_partial_last_shard(six_identities, identities, reopen, said):
    planned = change(
        six_identities, plan_of(six_identities, identities=identities, ids_per_shard=4), extend=True
    )
    assert planned.mode == "extend" and planned.reopen == reopen and planned.rewrite_index
    assert said in planned.lines[0]


def test_extend_of_a_dataset_of_whole_shards_renders_only_new_ones(tmp_path):
    write_dataset_manifest(
        open_storage(str(tmp_path)), plan_of(tmp_path, identities=8, ids_per_shard=4).manifest()
    )
    planned = change(tmp_path, plan_of(tmp_path, identities=12, ids_per_shard=4), extend=True)
    assert planned.reopen == [] and "1 new shard(s) (2..2), 2 shard(s) untouched" in planned.lines[0]


@pytest.mark.parametrize(
    "overrides, flags, message",
    [
        ({"identities": 10, "ids_per_shard": 4, "seed": 3}, {"extend": True}, "--extend only adds identities; the config also changes generate.seed: 0 -> 3"),
        ({"identities": 10, "ids_per_shard": 2}, {"extend": True}, "generate.ids_per_shard: 4 -> 2"),
        ({"identities": 5, "ids_per_shard": 4}, {"extend": True}, "has 6 identities, asked for 5"),
        ({"seed": 5}, {}, "another config (differs in generate.identities: 6 -> 64, generate.ids_per_shard: 4 -> 8, generate.seed: 0 -> 5)"),
        ({"identities": 6, "ids_per_shard": 4}, {"repair": True, "extend": True}, "cannot be combined"),
    ],
)  # fmt: skip
def test_refusals_say_what_differs(six_identities, overrides, flags, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        change(six_identities, plan_of(six_identities, **overrides), **flags)


@pytest.mark.parametrize("flag", ["repair", "extend"])
def test_repair_or_extend_needs_a_dataset(tmp_path, flag):
    with pytest.raises(SettingError, match=f"no dataset at .*; run without --{flag}"):
        change(tmp_path, plan_of(tmp_path, identities=4), **{flag: True})
    assert list(tmp_path.iterdir()) == []  # planning wrote nothing


def test_resume_and_new(six_identities, tmp_path):
    assert change(six_identities, plan_of(six_identities, identities=6, ids_per_shard=4)).mode == "resume"
    assert change(tmp_path / "fresh", plan_of(tmp_path / "fresh", identities=6)).mode == "new"
