"""`dppp eval` / dppp.trainer.evaluation.evaluate.run_eval: a saved tiny model on a real synthetic dataset (tar shards +
index.parquet) and on a fabricated Market-1501 folder; the report; models on S3; the errors users see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dppp.cli import main
from dppp.foundation.errors import DataError, UserError
from dppp.trainer.evaluation.config import EvalConfig
from dppp.trainer.evaluation.evaluate import run_eval
from tests.trainer.test_data import write_dataset

MARKET_PIDS = (2, 7, 11, 23, 42)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A BoT checkpoint of a randomly initialised tiny CLIP at 64x32 (what toy_batch and the shards use)."""
    from dppp.trainer.methods.checkpoint import save_checkpoint
    from dppp.trainer.methods.model import build_model
    from tests.helpers.toy_batch import toy_model_config

    model = build_model(toy_model_config("bot"), num_classes=6, style_vocab={})
    model.set_phase(2)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "final", model, step=7)


@pytest.fixture(scope="module")
def synthetic_url(tmp_path_factory) -> str:
    """6 identities of 2-6 views over 4 virtual cameras, committed shards and index.parquet."""
    from dppp.dataset.index import write_index
    from dppp.foundation.storage.urls import open_storage

    url = write_dataset(str(tmp_path_factory.mktemp("synthetic") / "ds"), n_ids=6, ids_per_shard=3)
    write_index(open_storage(url))
    return url


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory) -> Path:
    """A Market-1501 folder in which every image of a person is the same picture, whatever the camera,
    and persons differ strongly: any deterministic model must retrieve perfectly (rank-1 = mAP = 1)."""
    root = tmp_path_factory.mktemp("market") / "Market-1501-v15.09.15"
    rng = np.random.default_rng(0)
    pictures = {pid: rng.integers(0, 256, (64, 32, 3), dtype=np.uint8) for pid in (1, *MARKET_PIDS)}
    layout = {
        "bounding_box_train": [(1, 1, 0), (1, 2, 1)],
        "query": [(pid, 1, 0) for pid in MARKET_PIDS],
        "bounding_box_test": [(pid, cam, n) for pid in MARKET_PIDS for cam, n in ((2, 0), (3, 1), (1, 2))]
        + [(-1, 1, 0)],
    }  # a junk box, dropped by the reader
    for folder, entries in layout.items():
        (root / folder).mkdir(parents=True)
        for pid, cam, n in entries:
            image = pictures.get(pid, np.zeros((64, 32, 3), np.uint8))
            Image.fromarray(image).save(root / folder / f"{pid:04d}_c{cam}s1_{n:06d}_00.jpg", quality=95)
    return root


# ---- run_eval ---------------------------------------------------------------------------------------


def test_report_on_synthetic_and_market(model_dir, synthetic_url, market_dir, tmp_path):
    from dppp.trainer.data.specs import read_dataset
    from dppp.trainer.evaluation.metrics import chance_rank1

    out = tmp_path / "reports" / "report.json"
    specs = [f"synthetic:{synthetic_url}", f"market1501:{market_dir}"]
    report = run_eval(str(model_dir), specs, EvalConfig(max_rank=20, batch_size=4), str(out))

    assert report.model["method"] == "bot" and report.model["step"] == 7 and report.model["phase"] == 2
    assert report.model["image_size"] == [64, 32] and len(report.model["model_sha256"]) == 64
    assert report.config["max_rank"] == 20 and report.config["batch_size"] == 4
    synthetic, market = report.datasets
    split = read_dataset(specs[0])
    assert (synthetic.name, synthetic.spec) == ("synthetic", specs[0])
    assert (synthetic.num_query, synthetic.num_gallery) == (len(split.query), len(split.gallery))
    assert synthetic.num_valid + synthetic.num_skipped == synthetic.num_query and synthetic.num_valid > 0
    assert 0 < synthetic.mAP <= 1 and 0 < synthetic.mINP <= synthetic.mAP + 1e-9
    assert synthetic.rank1 <= synthetic.rank5 <= synthetic.rank10 <= 1 and len(synthetic.cmc) == 20
    # The same picture from every camera: perfect retrieval, whatever the (random) weights.
    assert (market.num_query, market.num_gallery, market.num_skipped) == (5, 15, 0)
    assert market.rank1 == market.mAP == market.mINP == 1.0
    market_split = read_dataset(specs[1])
    expected_chance = chance_rank1(
        [i.pid for i in market_split.query],
        [i.pid for i in market_split.gallery],
        [i.camid for i in market_split.query],
        [i.camid for i in market_split.gallery],
    )
    assert market.chance_rank1 == pytest.approx(expected_chance) and 0 < market.chance_rank1 < market.rank1

    saved = json.loads(out.read_text())
    assert saved == json.loads(report.to_json()) and saved["format"] == "dppp-eval-report/1"
    assert [d["spec"] for d in saved["datasets"]] == specs
    assert {
        "rank1",
        "rank5",
        "rank10",
        "mAP",
        "mINP",
        "num_query",
        "num_gallery",
        "num_valid",
        "num_skipped",
        "chance_rank1",
    } <= set(saved["datasets"][0])


def test_figures_are_the_library_pipeline_and_deterministic(model_dir, synthetic_url):
    """run_eval = load_checkpoint -> EvalTransform -> extract_features -> distance_matrix -> evaluate_ranking,
    computed here by hand; a second run gives the same figures."""
    from dppp.trainer.data.readers import synthetic_images
    from dppp.trainer.data.specs import read_dataset
    from dppp.trainer.data.transforms import EvalTransform
    from dppp.trainer.evaluation.features import distance_matrix, extract_features
    from dppp.trainer.evaluation.metrics import evaluate_ranking
    from dppp.trainer.methods.checkpoint import load_checkpoint

    config = EvalConfig(flip=True, metric="euclidean", synthetic={"seed": 3})
    report = run_eval(str(model_dir), [f"synthetic:{synthetic_url}"], config)
    model, _ = load_checkpoint(model_dir)
    split = read_dataset(f"synthetic:{synthetic_url}", seed=3)
    transform = EvalTransform((64, 32))

    def feats(items):
        images = (transform(image) for image in synthetic_images(synthetic_url, items))
        return extract_features(model.encode_images, images, 128, flip=True)

    expected = evaluate_ranking(
        distance_matrix(feats(split.query), feats(split.gallery), "euclidean"),
        [i.pid for i in split.query],
        [i.pid for i in split.gallery],
        [i.camid for i in split.query],
        [i.camid for i in split.gallery],
        max_rank=50,
    )
    got = report.datasets[0]
    assert (got.rank1, got.rank5, got.mAP, got.mINP) == pytest.approx(
        (expected.rank(1), expected.rank(5), expected.mAP, expected.mINP), abs=1e-12
    )
    again = run_eval(str(model_dir), [f"synthetic:{synthetic_url}"], config).datasets[0]
    assert (again.cmc, again.mAP, again.mINP) == (got.cmc, got.mAP, got.mINP)


@pytest.mark.parametrize("method", ["pdm", "clipreid"])
def test_untrained_figures_are_dppp_eval_of_the_untrained_model(model_dir, synthetic_url, method):
    """evaluate_untrained (what `make demo` prints beside the trained model's figures) ranks with the
    backbone the method starts from, head untrained: dppp eval's figures of model_dir, an untrained bot
    checkpoint of the same tiny CLIP, whatever the method; under a report's own config, read back."""
    from dppp.trainer.evaluation.evaluate import evaluate_untrained
    from tests.helpers.toy_batch import toy_model_config

    config = EvalConfig(flip=True, synthetic={"seed": 3})
    trained = run_eval(str(model_dir), [f"synthetic:{synthetic_url}"], config)
    assert EvalConfig.model_validate(trained.as_dict()["config"]) == config
    [floor] = evaluate_untrained(toy_model_config(method), [f"synthetic:{synthetic_url}"], config)
    got = trained.datasets[0]
    assert (floor.cmc, floor.mAP, floor.num_valid) == (got.cmc, got.mAP, got.num_valid)


def test_re_ranking_is_applied(model_dir, synthetic_url):
    spec = [f"synthetic:{synthetic_url}"]
    plain = run_eval(str(model_dir), spec, EvalConfig()).datasets[0]
    reranked = run_eval(
        str(model_dir), spec, EvalConfig(rerank={"enabled": True, "k1": 4, "k2": 2})
    ).datasets[0]
    assert reranked.num_valid == plain.num_valid
    assert (reranked.mAP, reranked.cmc) != (plain.mAP, plain.cmc)  # k-reciprocal distances re-order the lists


def test_training_run_folder_and_datasets_from_the_config(model_dir, market_dir):
    """A run folder (<out>/<run_name>) resolves to its final/; datasets default to eval.datasets."""
    run = model_dir.parent  # .../final is model_dir
    report = run_eval(str(run), None, EvalConfig(datasets=(f"market1501:{market_dir}",)))
    assert report.datasets[0].name == "market1501" and report.model["url"] == str(run)


def test_model_from_s3_downloads_only_the_weights(moto_s3, model_dir, market_dir, tmp_path):
    """The checkpoint files live on a real HTTP S3 endpoint (moto on loopback) under <run>/final/, with an
    optimizer state too: evaluation fetches checkpoint.json and the weights, and the figures match."""
    from dppp.foundation.storage.urls import open_storage
    from dppp.trainer.methods.checkpoint import load_checkpoint, save_checkpoint

    model, _ = load_checkpoint(model_dir)
    with_optimizer = save_checkpoint(
        tmp_path / "ckpt", model, __import__("torch").optim.SGD(model.parameters(), 0.1), step=7
    )
    run_url = moto_s3.bucket() + "/runs/r1"
    storage = open_storage(run_url)
    for path in sorted(with_optimizer.iterdir()):
        storage.put_file(path, f"final/{path.name}")
    spec = [f"market1501:{market_dir}"]
    remote = run_eval(run_url, spec, EvalConfig(), out=run_url + "/eval/report.json")
    local = run_eval(str(model_dir), spec, EvalConfig())
    assert remote.datasets[0].cmc == local.datasets[0].cmc and remote.model["method"] == "bot"
    assert json.loads(storage.read_bytes("eval/report.json"))["model"]["url"] == run_url

    storage.put_bytes(json.dumps({"files": {"../../escape": "0" * 64}}).encode(), "final/checkpoint.json")
    with pytest.raises(DataError, match="unexpected file"):
        run_eval(run_url, spec, EvalConfig())
    with pytest.raises(DataError, match="not a dppp model"):
        run_eval(moto_s3.bucket() + "/nothing", spec, EvalConfig())


# ---- the command ------------------------------------------------------------------------------------


def test_cli_prints_a_table_and_writes_the_report(model_dir, market_dir, synthetic_url, tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("eval:\n  batch_size: 3\n  flip: true\n")
    out = tmp_path / "r.json"
    code = main(
        [
            "eval",
            str(model_dir),
            str(config),  # CONFIG, positional as in every command (the older --config still works)
            "--data",
            f"market1501:{market_dir}",
            "--data",
            f"synthetic:{synthetic_url}",
            "--out",
            str(out),
            "--set",
            "eval.max_rank=12",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "rank-1" in printed and "mINP" in printed and "100.0" in printed and "market1501:" in printed
    saved = json.loads(out.read_text())
    assert (
        saved["config"]["flip"] is True and saved["config"]["max_rank"] == 12 and len(saved["datasets"]) == 2
    )


def test_cli_without_a_config_uses_the_defaults(model_dir, market_dir, capsys):
    # --dataset: the older spelling of --data, kept as a hidden alias
    assert (
        main(["eval", str(model_dir), "--dataset", f"market1501:{market_dir}", "--set", "eval.flip=true"])
        == 0
    )
    assert "flip True" in capsys.readouterr().out


def test_cli_old_config_option_still_works_but_not_beside_config(model_dir, market_dir, tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("eval:\n  flip: true\n")
    argv = ["eval", str(model_dir), "--data", f"market1501:{market_dir}"]
    assert main([*argv, "--config", str(config)]) == 0
    assert "flip True" in capsys.readouterr().out
    assert main([*argv[:2], str(config), *argv[2:], "--config", str(config)]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "dataset", "message"),
    [
        ("{tmp}/no-such-model", "market1501:{market}", "does not exist"),
        ("{tmp}", "market1501:{market}", "is not a dppp model"),
        ("{model}", "martket1501:{market}", "unknown name 'martket1501'"),
        ("{model}", "market1501", "expected NAME:PATH"),
        ("{model}", "market1501:{tmp}/missing", "does not exist"),
        ("{model}", "dukemtmc:{market}", "do not follow the DukeMTMC-reID naming"),
        ("{model}", "synthetic:{tmp}", "no index.parquet"),
    ],
)
def test_cli_errors_exit_2_and_write_nothing(
    model_dir, market_dir, tmp_path, capsys, model, dataset, message
):
    names = {"tmp": tmp_path, "market": market_dir, "model": model_dir}
    out = tmp_path / "report.json"
    code = main(["eval", model.format(**names), "--dataset", dataset.format(**names), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "error:" in err and "Traceback" not in err
    assert not out.exists()


def test_no_dataset_and_a_damaged_model_are_user_errors(model_dir, market_dir, tmp_path):
    with pytest.raises(UserError, match="no dataset to evaluate on"):
        run_eval(str(model_dir), [], EvalConfig())
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in model_dir.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    (damaged / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(DataError, match="sha256"):
        run_eval(str(damaged), [f"market1501:{market_dir}"], EvalConfig())
