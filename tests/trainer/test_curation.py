"""`dppp curate`: the signals on planted defects, the Ray job end to end (local and loopback S3), resume,
determinism, training and evaluation honouring the file (and refusing a foreign one), bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.curation_defects import DEFECTS, corrupt_dataset
from dppp.cli import main
from dppp.config import load_experiment
from dppp.dataset.curation import CURATION_NAME, REJECTS_SHEET, read_curation
from dppp.foundation.errors import SettingError
from dppp.foundation.storage.urls import open_storage
from dppp.trainer.curation.config import CurateConfig, SignalThresholds
from dppp.trainer.curation.signals import decide, identity_signals, pixel_signals, prompt_signals
from tests.conftest import s3_node_environment

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the signals, pure ------------------------------------------------------------------------------


def scene(seed: int = 0) -> Image.Image:
    """A small procedural-looking picture: flat regions and edges, as a render has."""
    rng = np.random.default_rng(seed)
    pixels = np.full((64, 32, 3), 120, dtype=np.uint8)
    pixels[:20] = (90, 140, 200)  # sky
    pixels[20:, 10:22] = rng.integers(0, 255, 3)  # a figure
    pixels[8:18, 12:20] = (220, 180, 150)  # its head
    return Image.fromarray(pixels)


def gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"))


def test_pixel_signals_tell_blank_and_noise_from_a_scene():
    rng = np.random.default_rng(0)
    clean, other = scene(0), scene(1)
    contrast, structure = pixel_signals(gray(clean))
    assert contrast > 20 and structure > 0.8
    blank_contrast, _ = pixel_signals(gray(DEFECTS["blank"](clean, rng, other)))
    assert blank_contrast < SignalThresholds().min_contrast
    _, noise_structure = pixel_signals(gray(DEFECTS["noise"](clean, rng, other)))
    assert abs(noise_structure) < SignalThresholds().min_structure


def test_prompt_signals_rank_an_image_against_other_identities_prompts():
    pids = np.array([0, 0, 1, 1])
    similarity = np.array(
        [
            [0.9, 0.8, 0.2, 0.1],  # matches its own prompt best
            [0.7, 0.6, 0.1, 0.2],  # its identity's other prompt beats it: same person, not a rival
            [0.1, 0.9, 0.3, 0.2],  # a prompt of identity 0 beats its own by 0.6: somebody else
            [0.5, 0.5, 0.5, 0.5],  # ties are no rival
        ]
    )
    rank, margin = prompt_signals(similarity, pids)
    assert rank.tolist() == [0.0, 0.0, 0.5, 0.0]
    assert margin == pytest.approx([0.7, 0.4, -0.6, 0.0])


def test_identity_signals_find_a_view_of_somebody_else_and_ignore_degenerate_views():
    a, b = np.eye(4)[0], np.eye(4)[1]
    features = np.stack([a, a, a, b, b, b, np.eye(4)[3]])
    pids = np.array([0, 0, 0, 1, 1, 0, 1])  # view 5 is labelled 0 but looks like identity 1
    usable = np.array([True] * 6 + [False])  # view 6 is a blank frame: out of every mean
    signals = identity_signals(features, pids, usable)
    assert signals.consistency[:3] == pytest.approx([0.8944, 0.8944, 0.8944], abs=1e-3)
    assert signals.consistency[5] < 0.5 and signals.margin[5] < 0  # closer to identity 1 than to its own
    assert signals.consistency[3] == pytest.approx(1.0)  # identity 1's mean left the blank frame out
    lone = identity_signals(features[:1], pids[:1], usable[:1])
    assert np.isnan(lone.consistency[0]) and lone.near_duplicate_pid[0] == -1


def test_decide_takes_the_first_failing_signal_and_nan_judges_nothing():
    nan = float("nan")
    scores = {
        "contrast": np.array([0.0, 50, 50, 50, 50]),
        "structure": np.array([1.0, 0.0, 0.9, 0.9, 0.9]),
        "prompt_rank": np.array([0.9, 0.9, 0.5, 0.0, nan]),
        "prompt_margin": np.array([-1.0, -1, -0.5, 0.2, nan]),
        "identity_consistency": np.array([0.0, 0, 0, 0.1, nan]),
        "identity_margin": np.array([-1.0, -1, -1, -1, nan]),
        "near_duplicate": np.array([0.99] * 5),
    }
    keep, reason = decide(scores, SignalThresholds())
    assert reason == ["blank", "noise", "prompt", "identity", ""]
    assert keep.tolist() == [False, False, False, False, True]
    _, strict = decide(scores, SignalThresholds(reject_near_duplicates=True))
    assert strict[-1] == "near_duplicate"


def test_curate_section_is_typed_and_validated():
    config = load_experiment(None, ["curate.thresholds.min_prompt_margin=-0.2"]).curate
    assert config.thresholds.min_prompt_margin == -0.2
    with pytest.raises(Exception, match="max_prompt_rank"):
        load_experiment(None, ["curate.thresholds.max_prompt_rank=2"])


# ---- the job on a tiny procedural dataset ------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local(_moto_server):
    """A local Ray whose workers inherit the loopback S3 endpoint and its fake credentials (dppp sends
    actors no credentials: a cluster's nodes have their own), as tests/pipeline's ray_instance does."""
    import ray

    from dppp.foundation.ray_cluster import start_ray

    with s3_node_environment(_moto_server):
        start_ray(None, 2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory, ray_local) -> tuple[Path, Path, dict[str, str]]:
    """A tiny demo-like dataset (8 identities, 2 shards), and a copy with 15% of its images planted.
    Rendered in this process by generate's own worker (the generate job is tested elsewhere)."""
    from dppp.dataset.index import write_index
    from dppp.pipeline.generate import build_plan, prepare_output
    from dppp.pipeline.worker import ShardWorker

    root = tmp_path_factory.mktemp("curate")
    sets = [f"generate.out={root / 'clean'}", "generate.identities=8", "generate.ids_per_shard=4"]
    plan = build_plan(load_experiment(ROOT / "configs" / "demo.yaml", sets).generate)
    storage = prepare_output(plan, overwrite=False)
    worker = ShardWorker(plan.config, threads=1)
    for shard in plan.shards:
        worker.run(shard)
    write_index(storage)
    planted = corrupt_dataset(root / "clean", root / "bad", 0.15, seed=3)
    return root / "clean", root / "bad", planted


def config(**overrides) -> CurateConfig:
    return CurateConfig(model=str(ROOT / "models" / "tiny-clip"), workers=1, **overrides)


@pytest.fixture(scope="module")
def curated(corrupted, tmp_path_factory):
    """curate on a copy of the corrupted dataset: (dataset path, summary)."""
    from dppp.trainer.curation.job import run_curate

    path = tmp_path_factory.mktemp("curated") / "bad"
    shutil.copytree(corrupted[1], path)
    return path, run_curate(str(path), config(), progress=False)


def rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path / CURATION_NAME).to_pylist()


def test_curate_writes_one_row_per_sample_and_rejects_the_planted_defects(corrupted, curated):
    _, _, planted = corrupted
    path, summary = curated
    table = rows(path)
    records = [json.loads(p.read_text()) for p in sorted((path / "shards").glob("shard-*.json"))]
    assert [r["key"] for r in table] == [k for record in records for k in record["keys"]]
    assert summary.counts.samples == len(table) and summary.shards_done == 2 and summary.workers == 1
    by_key = {r["key"]: r for r in table}
    for key, kind in planted.items():
        if kind in ("blank", "noise"):
            assert by_key[key]["reason"] == kind, (key, kind)
    caught = sum(not by_key[key]["keep"] for key in planted) / len(planted)
    clean_rejected = sum(not r["keep"] for r in table if r["key"] not in planted) / (
        len(table) - len(planted)
    )
    assert caught >= 0.8 and clean_rejected <= 0.1, (caught, clean_rejected)
    assert all((r["reason"] == "") == r["keep"] for r in table)
    sheet = Image.open(path / REJECTS_SHEET)
    assert sheet.width > 100 and sheet.height > 100
    stats = read_curation(open_storage(str(path)), rows=False).counts
    assert stats.kept == sum(r["keep"] for r in table)
    from dppp.pipeline.verify import verify_dataset

    report = verify_dataset(str(path))  # curate's files belong to the dataset: never 'extra'
    assert report.ok, [(check.name, check.problems) for check in report.checks]


def test_rerun_resumes_and_gives_the_same_bytes(curated):
    from dppp.trainer.curation.job import plan_curation, run_curate

    path, _ = curated
    first = (path / CURATION_NAME).read_bytes()
    again = run_curate(str(path), config(), progress=False)
    assert again.shards_done == 0 and again.shards_skipped == 2  # nothing judged twice
    assert (path / CURATION_NAME).read_bytes() == first
    (path / CURATION_NAME).unlink()
    parts = sorted((path / "curation").rglob("shard-*.parquet"))
    parts[1].unlink()  # as if the job had been killed before the second shard was committed
    resumed = run_curate(str(path), config(), progress=False)
    assert resumed.shards_done == 1 and resumed.shards_skipped == 1
    assert (path / CURATION_NAME).read_bytes() == first
    other = plan_curation(str(path), config(thresholds=SignalThresholds(min_contrast=0)))
    assert other.run != resumed.run and not other.done  # other settings: another run, never mixed


@pytest.mark.slow
def test_curate_to_loopback_s3_gives_the_same_file(curated, moto_s3):
    from dppp.trainer.curation.job import run_curate

    path, _ = curated
    url = moto_s3.bucket("curate") + "/demo"
    storage = open_storage(url)
    for file in sorted(path.rglob("*")):
        key = file.relative_to(path).as_posix()
        if file.is_file() and key.startswith(("dataset.json", "index.parquet", "shards/")):
            storage.put_file(file, key)
    summary = run_curate(url, config(), progress=False)
    assert summary.shards_done == 2
    assert storage.read_bytes(CURATION_NAME) == (path / CURATION_NAME).read_bytes()
    assert storage.exists(REJECTS_SHEET)


# ---- training and evaluation honour the file ---------------------------------------------------------


def test_training_leaves_out_the_rejects_and_refuses_a_foreign_file(corrupted, curated):
    from dppp.trainer.data.sources import open_training_data

    clean, _, _ = corrupted
    path, _ = curated
    table = rows(path)
    rejected = {r["key"] for r in table if not r["keep"]}
    data = open_training_data([str(path)], curation="auto")
    members = {m for unit in data.units for identity in unit.identities for m in identity.members}
    assert members == {r["key"] for r in table} - rejected
    assert data.curated == len(rejected) and f"{len(rejected)} dropped by curation" in data.describe()
    assert open_training_data([str(path)], curation="off").num_images == len(table)
    explicit = open_training_data([str(path)], curation=str(path / CURATION_NAME))
    assert explicit.num_images == len(table) - len(rejected)
    # The clean dataset has the same config but other tars: the file judged other shards.
    with pytest.raises(SettingError, match="judged another version"):
        open_training_data([str(clean)], curation=str(path / CURATION_NAME))


def test_a_file_of_another_dataset_is_refused_with_exit_2(curated, tmp_path, capsys):
    from tests.trainer.test_data import write_dataset

    path, _ = curated
    other = write_dataset(str(tmp_path / "other"), n_ids=6, ids_per_shard=3)
    sets = [f"train.data.curation={path / CURATION_NAME}", f"train.data.sources=[{other}]"]
    config_file = tmp_path / "x.yaml"
    config_file.write_text("train: {}\n")
    assert main(["train", str(config_file), *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert "made for another dataset" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluation_splits_leave_out_the_rejects(curated):
    from dppp.trainer.data.readers import read_synthetic

    path, _ = curated
    rejected = {r["key"] for r in rows(path) if not r["keep"]}
    split = read_synthetic(str(path), curation="auto")
    keys = {item.path.partition("#")[2] for item in (*split.query, *split.gallery)}
    assert keys and not keys & rejected
    everything = read_synthetic(str(path), curation="off")
    assert len(everything.query) + len(everything.gallery) == len(keys) + len(rejected)


def test_shards_stats_reports_kept_and_rejected(curated, capsys):
    path, summary = curated
    assert main(["shards", "stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{summary.counts.kept} kept, {summary.counts.samples - summary.counts.kept} rejected" in out


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_input_gives_one_line_and_exit_2(corrupted, tmp_path, capsys):
    from tests.trainer.test_data import write_dataset

    cases = [
        ([str(tmp_path / "nothing")], "dataset.json"),
        ([write_dataset(str(tmp_path / "uncommitted"), n_ids=6, commit=0)], "no committed shard"),
        ([str(corrupted[0]), "--model", str(tmp_path / "no-such-clip")], "does not exist"),
        ([str(corrupted[0]), "--model", str(ROOT / "configs")], "no config.json"),
    ]
    for args, message in cases:
        assert main(["curate", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_a_damaged_shard_fails_with_exit_1_and_writes_no_file(corrupted, tmp_path, capsys):
    path = tmp_path / "damaged"
    shutil.copytree(corrupted[0], path)
    tar = path / "shards" / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])  # cut mid-member, record kept
    assert main(["curate", str(path), "--model", str(ROOT / "models" / "tiny-clip"), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "shard 000001" in captured.err and "Traceback" not in captured.err
    assert not (path / CURATION_NAME).exists()
    assert len(list((path / "curation").rglob("shard-*.parquet"))) == 1  # the intact shard's file stays


def test_dry_run_writes_nothing(corrupted, capsys):
    clean = corrupted[0]
    before = sorted(p.name for p in clean.rglob("*"))
    assert main(["curate", str(clean), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "to judge" in out and "images/s" in out
    assert sorted(p.name for p in clean.rglob("*")) == before


def test_config_is_the_argument_after_url_as_on_every_command(corrupted, tmp_path, capsys):
    clean = corrupted[0]
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("curate:\n  workers: 3\n")
    assert main(["curate", str(clean), str(experiment), "--dry-run"]) == 0
    assert "on 3 CPU worker(s)" in capsys.readouterr().out  # the YAML's curate section was read
    assert main(["curate", str(clean), "--config", str(experiment), "--dry-run"]) == 0  # the older spelling
    assert "on 3 CPU worker(s)" in capsys.readouterr().out
    assert main(["curate", str(clean), str(experiment), "--config", str(experiment), "--dry-run"]) == 2
    assert "give the experiment YAML once" in capsys.readouterr().err
