"""`dppp pretrain`: contrastive image-text pretraining of the tiny CLIP, its folder as a PDM backbone, the
checks that keep pretraining people apart from Re-ID splits, and the backbone folders that are refused."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from dppp.cli import main
from tests.conftest import make_samples
from tests.trainer.test_data import write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "patch_size": 8,
    "projection_dim": 32,
}


def small_model_config(**overrides):
    from dppp.trainer.pretraining.config import PretrainModelConfig

    return PretrainModelConfig.model_validate({"architecture": SMALL, "image_size": [64, 32], **overrides})


def pairs(n_ids: int = 8):
    """One (image, prompt) batch from real shards through the streaming loader (texts=True)."""
    from dppp.trainer.data.config import DataConfig
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    with tempfile.TemporaryDirectory() as tmp:
        url = write_dataset(f"{tmp}/ds", n_ids=n_ids, ids_per_shard=n_ids)
        data = open_training_data([url])
        config = DataConfig(ids_per_batch=n_ids, images_per_id=1, num_workers=0, augment={"enabled": False})
        return next(iter(PKBatchStream(data, config, (64, 32), seed=0, epoch=0, texts=True)))


def test_a_few_pretraining_steps_lower_the_contrastive_loss():
    from dppp.trainer.pretraining.clip_pretrain import ClipPretrainModel

    batch = pairs(4)  # the toy prompts name gender and colour: 4 people, 4 different prompts
    assert len(set(batch["texts"])) == 4 and batch["texts"][0].startswith("a photo of a ")
    model = ClipPretrainModel(small_model_config())
    optimizer = torch.optim.AdamW(model.parameter_groups(0.1), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, parts = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(parts["clip"]))
    assert losses[0] > 0.9 * torch.log(torch.tensor(4.0))  # starts near chance, ln(batch)
    assert losses[-1] < 0.5 * losses[0]
    assert model.clip.logit_scale.grad is not None  # the temperature learns too


def test_pretrained_folder_loads_as_a_backbone_with_identical_features(tmp_path):
    from dppp.trainer.clip.backbone import load_backbone
    from dppp.trainer.methods.config import ModelConfig
    from dppp.trainer.pretraining.clip_pretrain import ClipPretrainModel

    model = ClipPretrainModel(small_model_config()).eval()
    folder = model.save_pretrained(tmp_path / "clip")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    backbone = load_backbone(ModelConfig(backbone=str(folder), image_size=(64, 32)), [])
    assert backbone.tokenizer.model_max_length == 77
    batch = pairs()
    with torch.no_grad():
        assert torch.allclose(
            backbone.encode_image(batch["pixel_values"]), model.encode_image(batch["pixel_values"]), atol=1e-5
        )
        ids = model.tokenize(batch["texts"], "cpu")
        assert torch.allclose(
            backbone.encode_text(ids, backbone.token_embedding(ids)), model.encode_text(ids), atol=1e-5
        )


def test_the_whole_word_tokenizer_fits_every_prompt_in_77_tokens():
    from dppp.config import load_experiment
    from dppp.pipeline.prompting import prompt_engine
    from dppp.trainer.pretraining.clip_pretrain import pretrain_tokenizer

    tokenizer = pretrain_tokenizer(77)
    engine = prompt_engine(load_experiment(ROOT / "configs" / "pretrain.yaml").generate)
    longest = max(len(tokenizer(v.prompt)["input_ids"]) for v in engine.iter_views(range(200)))
    assert longest <= 77
    assert tokenizer.tokenize("night under streetlights") == ["night</w>", "under</w>", "streetlights</w>"]


# ---- what is refused, before any worker starts ------------------------------------------------------------


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("pretrain-data") / "ds"), n_ids=12, ids_per_shard=3)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    from dppp.trainer.pretraining.clip_pretrain import ClipPretrainModel

    return ClipPretrainModel(small_model_config()).save_pretrained(tmp_path_factory.mktemp("clip") / "clip")


def copy_folder(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_bad_backbone_folders_exit_2_with_one_message(tmp_path, capsys, small_dataset, clip_folder):
    from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer

    empty = tmp_path / "empty"
    empty.mkdir()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    other_vocab = copy_folder(clip_folder, tmp_path / "other-vocab")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (other_vocab / name).unlink()
    build_tiny_clip_tokenizer(model_max_length=77).save_pretrained(other_vocab)  # the sub-word vocabulary
    cases = [
        (empty, "holds no config.json: not a saved CLIP model"),
        (bert, "holds a 'bert' model, not a CLIP"),
        (other_vocab, "its tokenizer has 1670 tokens but the text model's vocabulary has 1506"),
        (tmp_path / "missing", "does not exist"),
    ]
    config = write_config(
        tmp_path,
        {
            "train": {
                "model": {"image_size": [64, 32], "style_attributes": ["camid"]},
                "data": {"ids_per_batch": 4, "images_per_id": 2},
            }
        },
    )
    for folder, message in cases:
        code = main(
            [
                "train",
                str(config),
                "--data",
                small_dataset,
                "--out",
                str(tmp_path / "runs"),
                "--set",
                f"train.model.backbone={folder}",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and message in err and str(folder) in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_pretraining_data_without_prompts_exits_2(tmp_path, capsys):
    from dppp.dataset.records import write_dataset_manifest
    from dppp.dataset.shard_writer import Sample, write_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.pipeline.publish import publish_shard
    from tests.trainer.test_data import TAXONOMY

    url = str(tmp_path / "no-prompts")
    write_dataset_manifest(open_storage(url), {"format": "dppp-dataset/1", "taxonomy": TAXONOMY})
    samples = [Sample(s.key, s.image_bytes, s.image_ext, s.metadata, "", s.pid) for s in make_samples(4, 2)]
    publish_shard(open_storage(url), 0, tmp_path / "0.tar", write_shard(samples, tmp_path / "0.tar"))
    config = write_config(tmp_path, {"pretrain": {"model": {"architecture": SMALL, "image_size": [64, 32]}}})
    assert main(["pretrain", str(config), "--data", url, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "no-prompts: its samples carry no prompt (txt member)" in err and "Traceback" not in err
    assert main(["pretrain", str(config), "--data", "market1501:/data/market"]) == 2
    assert "a Re-ID folder has no prompts" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_people_seen_in_pretraining_are_refused_as_training_data(
    tmp_path, capsys, small_dataset, clip_folder
):
    from dppp.trainer.clip.model_card import write_card
    from dppp.trainer.data.identities import check_disjoint, people

    seen = people(small_dataset)
    assert sorted(seen) == list(range(12)) and all(len(d) == 16 for d in seen.values())
    with pytest.raises(Exception, match="also appear in the pretraining corpus"):
        check_disjoint(seen.values(), small_dataset, "pretraining corpus")
    assert check_disjoint(["0123456789abcdef"], small_dataset, "pretraining corpus") == 12

    backbone = copy_folder(clip_folder, tmp_path / "card")
    write_card(backbone, {"data": {"people": sorted(seen.values())}})
    config = write_config(
        tmp_path,
        {
            "train": {
                "model": {"image_size": [64, 32], "style_attributes": ["camid"]},
                "data": {"ids_per_batch": 4, "images_per_id": 2},
            }
        },
    )
    code = main(
        [
            "train",
            str(config),
            "--data",
            small_dataset,
            "--out",
            str(tmp_path / "runs"),
            "--set",
            f"train.model.backbone={backbone}",
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2 and "12 of its 12 identities" in err and f"pretraining corpus of backbone {backbone}" in err
    )
    assert not (tmp_path / "runs").exists()


def test_hidden_attributes_do_not_tell_people_apart():
    from dppp.trainer.data.identities import appearance_key

    dims = {
        "bag": {"values": {"none": 1, "backpack": 1}},
        "bag_color": {"values": {"red": 1, "blue": 1}, "hidden_when": {"bag": "none"}},
    }
    assert (
        appearance_key({"bag": "none", "bag_color": "red"}, dims)
        == appearance_key({"bag": "none", "bag_color": "blue"}, dims)
        == "bag=none|bag_color=-"
    )
    assert appearance_key({"bag": "backpack", "bag_color": "red"}, dims) != appearance_key(
        {"bag": "backpack", "bag_color": "blue"}, dims
    )


def test_the_appearance_caption_is_what_every_view_of_a_person_starts_with():
    from dppp.pipeline.prompting import prompt_engine
    from dppp.prompts.captions import AppearanceCaptioner
    from dppp.prompts.taxonomy import load_taxonomy, taxonomy_from_dict

    shipped = load_taxonomy(None)
    # dataset.json stores the taxonomy with sorted keys: the sampling order is rebuilt from the rules.
    stored = json.loads(json.dumps(shipped.as_dict(), sort_keys=True))
    rebuilt = taxonomy_from_dict(stored, source="dataset.json")
    assert rebuilt.hash == shipped.hash
    captioner = AppearanceCaptioner(rebuilt)
    engine = prompt_engine(load_experiment_generate())
    by_pid: dict[int, set[str]] = {}
    for view in engine.iter_views(range(40)):
        caption = captioner(view.attributes)
        assert view.prompt.startswith(caption) and len(caption) < len(view.prompt)
        by_pid.setdefault(view.pid, set()).add(caption)
    assert all(len(captions) == 1 for captions in by_pid.values())  # one caption per person
    assert len({next(iter(c)) for c in by_pid.values()}) == 40  # and a different one for each


def load_experiment_generate():
    from dppp.config import load_experiment

    return load_experiment(ROOT / "configs" / "pretrain.yaml").generate


def test_pretraining_batches_carry_prompts_and_appearance_captions():
    from dppp.trainer.pretraining.clip_pretrain import ClipPretrainModel

    batch = pairs(4)
    model = ClipPretrainModel(small_model_config())
    _, parts = model.loss({**batch, "captions": [t.split(" in a ")[0] for t in batch["texts"]]})
    assert set(parts) == {"clip", "appearance", "logit_scale"}
    _, parts = ClipPretrainModel(small_model_config(appearance_weight=0)).loss(batch)
    assert set(parts) == {"clip", "logit_scale"}


# ---- slow: the whole path on real generated shards with Ray --------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A pretraining corpus and a held-out set of other people (procedural renderer, 64x32), on local Ray."""
    import ray

    from dppp.config import load_experiment
    from dppp.pipeline.generate import run_generate

    root = tmp_path_factory.mktemp("generated")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        urls = {}
        # The held-out set at the shipped CLIP's render size (256x128, read at 128x64), the corpus smaller.
        for name, seed, identities, (height, width) in (
            ("corpus", 5, 24, (64, 32)),
            ("heldout", 6, 12, (256, 128)),
        ):
            sets = [
                f"generate.out={root / name}",
                f"generate.seed={seed}",
                f"generate.identities={identities}",
                "generate.ids_per_shard=4",
                "generate.workers=2",
                f"generate.output.height={height}",
                f"generate.output.width={width}",
                "generate.prompts.views.mean=5",
                "generate.prompts.views.min=3",
            ]
            run_generate(load_experiment(ROOT / "configs" / "pretrain.yaml", sets).generate, progress=False)
            urls[name] = str(root / name)
        yield urls
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_pretrain_then_train_pdm_on_the_pretrained_folder(generated, tmp_path):
    from dppp.config import load_experiment
    from dppp.foundation.errors import DataError
    from dppp.trainer.clip.backbone import load_backbone
    from dppp.trainer.data.identities import people
    from dppp.trainer.evaluation.evaluate import run_eval
    from dppp.trainer.methods.config import ModelConfig
    from dppp.trainer.pretraining.pretrain import run_pretrain
    from dppp.trainer.training.run_log import read_metrics
    from dppp.trainer.training.train import run_train

    sets = [
        "pretrain.model.architecture.hidden_size=32",
        "pretrain.model.architecture.intermediate_size=64",
        "pretrain.model.architecture.patch_size=8",
        "pretrain.model.architecture.projection_dim=32",
        "pretrain.model.image_size=[64,32]",
        "pretrain.data.ids_per_batch=8",
        "pretrain.data.pool_identities=8",
        "pretrain.schedule.epochs=12",
        "pretrain.schedule.lr=1.0e-3",
        "pretrain.log_every_steps=4",
        f"pretrain.zero_shot.datasets=[{generated['heldout']}]",
        "pretrain.zero_shot.ensemble_identities=64",
        f"pretrain.export={tmp_path / 'clip'}",
        "pretrain.workers=1",
    ]
    config = load_experiment(ROOT / "configs" / "pretrain.yaml", sets).pretrain
    result = run_pretrain(config, [generated["corpus"]], str(tmp_path / "runs"), progress=False)

    epochs = [r for r in read_metrics(Path(result.run_url) / "metrics.jsonl") if r["kind"] == "epoch"]
    assert len(epochs) == 12 and "loss/appearance" in epochs[0]
    assert epochs[-1]["loss/clip"] < 0.85 * epochs[0]["loss/clip"]  # from about chance, ln(8) = 2.08
    card = result.card
    assert card["data"]["identities"] == 24 and sorted(card["data"]["people"]) == sorted(
        people(generated["corpus"]).values()
    )
    assert card["training"]["steps"] == result.steps and card["zero_shot"]["images"] > 0
    assert {a["name"] for a in card["zero_shot"]["attributes"]} >= {"gender", "upper_color", "illumination"}
    folder = Path(result.export)
    assert (folder / "model_card.json").is_file() and (Path(result.final_url) / "config.json").is_file()
    assert (
        load_backbone(ModelConfig(backbone=str(folder), image_size=(64, 32)), []).tokenizer.model_max_length
        == 77
    )

    # PDM on it, trained on other people: the folder is a backbone like any CLIP folder.
    train = load_experiment(
        None,
        [
            f"train.model.backbone={folder}",
            "train.model.image_size=[64,32]",
            "train.model.inversion_hidden_dim=32",
            "train.phase1.epochs=1",
            "train.phase2.epochs=1",
            "train.data.ids_per_batch=4",
            "train.data.images_per_id=2",
            "train.data.num_workers=0",
            "train.run_name=on-pretrained",
        ],
    ).train
    trained = run_train(train, [generated["heldout"]], str(tmp_path / "runs"), workers=1, progress=False)
    assert trained.health["images"] > 0 and "cosine_gap" in trained.health
    report = run_eval(trained.final_url, [f"synthetic:{generated['heldout']}"])
    assert report.datasets[0].num_query > 0
    # ... but never on, or tested on, the people it was pretrained on.
    with pytest.raises(DataError, match="24 of its 24 identities .* also appear in the pretraining corpus"):
        run_train(train, [generated["corpus"]], str(tmp_path / "runs"), workers=1, progress=False)
    with pytest.raises(DataError, match="also appear in the pretraining corpus"):
        run_eval(trained.final_url, [f"synthetic:{generated['corpus']}"])


@pytest.mark.slow
def test_the_shipped_pretrained_clip_reads_attributes_of_people_it_never_saw(generated):
    """models/tiny-clip (committed; `make pretrain` remakes it) loads as a backbone, and by text prompts
    alone tells the scene, the light and the clothes' colours of new people far above chance."""
    from dppp.trainer.clip.backbone import load_backbone
    from dppp.trainer.clip.model_card import read_card
    from dppp.trainer.data.identities import check_disjoint
    from dppp.trainer.evaluation.config import ZeroShotConfig
    from dppp.trainer.evaluation.zero_shot import zero_shot
    from dppp.trainer.methods.config import ModelConfig

    folder = ROOT / "models" / "tiny-clip"
    card = read_card(folder)
    assert (
        card["image_size"] == [128, 64] and len(card["data"]["people"]) == card["data"]["identities"] == 2048
    )
    assert card["zero_shot"]["mean_accuracy"] > 1.5 * card["zero_shot"]["mean_chance"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000  # a few MB in the repository
    check_disjoint(card["data"]["people"], generated["heldout"], "pretraining corpus")  # new people indeed
    backbone = load_backbone(ModelConfig(backbone=str(folder), image_size=(128, 64)), [])
    report = zero_shot(backbone, ZeroShotConfig(datasets=(generated["heldout"],), ensemble_identities=256))
    scores = {a.name: a for a in report.attributes}
    assert report.images >= 36 and report.mean_accuracy > 1.3 * report.mean_chance
    for name in ("scene", "illumination", "upper_color"):
        assert scores[name].accuracy > 3 * scores[name].chance, (name, scores[name])
