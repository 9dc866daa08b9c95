"""Benchmark readers on tiny fabricated folders that use the real naming conventions."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dppp.foundation.errors import DataError, UserError
from dppp.trainer.data.readers import read_cuhk03_np, read_dukemtmc, read_market1501, read_msmt17
from dppp.trainer.data.specs import parse_dataset_spec, read_dataset


def make_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (4, 8), (10 * i % 256, 80, 160)).save(folder / name)


def market_folder(root: Path) -> Path:
    make_images(
        root / "bounding_box_train",
        ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s3_064744_02.jpg"],
    )
    make_images(root / "query", ["0001_c1s1_001051_00.jpg", "0003_c4s1_000601_00.jpg"])
    make_images(
        root / "bounding_box_test",
        [
            "-1_c1s1_000401_03.jpg",
            "0000_c6s1_000176_04.jpg",
            "0001_c5s1_001326_05.jpg",
            "0003_c2s1_000151_01.jpg",
            "0001_c1s1_001101_02.jpg",
        ],
    )
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"windows thumbnail cache")
    return root


def test_market1501_drops_junk_keeps_distractors_in_gallery(tmp_path):
    split = read_market1501(market_folder(tmp_path / "Market-1501-v15.09.15"))
    assert split.name == "market1501"
    assert [(Path(i.path).name, i.pid, i.camid) for i in split.query] == [
        ("0001_c1s1_001051_00.jpg", 1, 1),
        ("0003_c4s1_000601_00.jpg", 3, 4),
    ]
    gallery = [(Path(i.path).name, i.pid, i.camid) for i in split.gallery]
    assert gallery == [
        ("0000_c6s1_000176_04.jpg", 0, 6),
        ("0001_c1s1_001101_02.jpg", 1, 1),
        ("0001_c5s1_001326_05.jpg", 1, 5),
        ("0003_c2s1_000151_01.jpg", 3, 2),
    ]
    assert {i.pid for i in split.train} == {2, 7} and all(Path(i.path).is_file() for i in split.train)
    assert split.stats()["gallery"] == {"images": 4, "pids": 3, "cameras": 4}


def test_dukemtmc_naming_and_a_reader_pointed_at_the_wrong_dataset(tmp_path):
    root = tmp_path / "DukeMTMC-reID"
    make_images(root / "bounding_box_train", ["0005_c2_f0046985.jpg", "0005_c5_f0051781.jpg"])
    make_images(root / "query", ["0005_c2_f0046985.jpg"])
    make_images(root / "bounding_box_test", ["0005_c6_f0062041.jpg", "0019_c1_f0011320.jpg"])
    split = read_dukemtmc(root)
    assert [(i.pid, i.camid) for i in split.gallery] == [(5, 6), (19, 1)]
    with pytest.raises(DataError, match=r"do not follow the Market-1501 naming.*0005_c2_f0046985\.jpg"):
        read_market1501(root)
    with pytest.raises(DataError, match="DukeMTMC-reID naming"):
        read_dukemtmc(market_folder(tmp_path / "market"))


def test_cuhk03_np_labeled_and_detected(tmp_path):
    root = tmp_path / "cuhk03-np"
    for variant, extra in (("labeled", "0003_c2_7.png"), ("detected", "0004_c2_7.png")):
        make_images(root / variant / "bounding_box_train", ["0001_c1_1.png", "0001_c2_6.png"])
        make_images(root / variant / "query", ["0003_c1_2.png"])
        make_images(root / variant / "bounding_box_test", ["0003_c2_6.png", extra])
    labeled = read_cuhk03_np(root, "labeled")
    detected = read_dataset(f"cuhk03-detected:{root}")
    assert labeled.name == "cuhk03-labeled" and detected.name == "cuhk03-detected"
    assert [(i.pid, i.camid) for i in labeled.gallery] == [(3, 2), (3, 2)]
    assert [(i.pid, i.camid) for i in detected.gallery] == [(3, 2), (4, 2)]
    assert "/labeled/" in labeled.query[0].path and "/detected/" in detected.query[0].path
    # Pointing straight at the variant's folder works too.
    assert read_cuhk03_np(root / "labeled", "labeled") == labeled
    with pytest.raises(DataError, match="expected a 'detected/' subfolder"):
        read_cuhk03_np(root / "labeled", "detected")


def msmt17_folder(root: Path, train_dir: str, test_dir: str) -> Path:
    train = [
        "0000/0000_000_01_0303morning_0015_0.jpg",
        "0000/0000_001_05_0303morning_0036_1.jpg",
        "0001/0001_000_03_0303morning_0123_0.jpg",
    ]
    val = ["0001/0001_001_07_0303afternoon_0553_0.jpg"]
    query = ["0000/0000_000_02_0303noon_1001_0.jpg", "0001/0001_000_10_0303noon_1002_0.jpg"]
    gallery = ["0000/0000_003_15_0303noon_1003_0.jpg", "0001/0001_005_10_0303noon_1004_0.jpg"]
    for folder, names in ((train_dir, train + val), (test_dir, query + gallery)):
        for name in names:
            make_images((root / folder / name).parent, [Path(name).name])
    for list_name, names in (
        ("list_train.txt", train),
        ("list_val.txt", val),
        ("list_query.txt", query),
        ("list_gallery.txt", gallery),
    ):
        (root / list_name).write_text("".join(f"{n} {int(n[:4])}\n" for n in names))
    return root


@pytest.mark.parametrize("layout", [("train", "test"), ("mask_train_v2", "mask_test_v2")])
def test_msmt17_lists_both_layouts(tmp_path, layout):
    root = msmt17_folder(tmp_path / "MSMT17", *layout)
    split = read_msmt17(root)
    assert split.name == "msmt17"
    assert len(split.train) == 4  # list_train + list_val
    assert sorted((i.pid, i.camid) for i in split.train) == [(0, 1), (0, 5), (1, 3), (1, 7)]
    assert [(i.pid, i.camid) for i in split.query] == [(0, 2), (1, 10)]
    assert [(i.pid, i.camid) for i in split.gallery] == [(0, 15), (1, 10)]
    assert all(f"/{layout[1]}/" in i.path and Path(i.path).is_file() for i in split.query + split.gallery)


def test_msmt17_errors_name_the_problem(tmp_path):
    outer = tmp_path / "data"
    root = msmt17_folder(outer / "MSMT17_V1", "train", "test")
    with pytest.raises(DataError, match=r"missing list_train.txt.*MSMT17_V1/: point at that folder"):
        read_msmt17(outer)
    (root / "list_query.txt").write_text("0000/0000_000_02_0303noon_1001_0.jpg\n")
    with pytest.raises(DataError, match=r"list_query.txt:1: expected '<path> <pid>'"):
        read_msmt17(root)
    (root / "list_query.txt").write_text("0009/0009_000_02_0303noon_1001_0.jpg 9\n")
    with pytest.raises(DataError, match="does not exist: are the images extracted"):
        read_msmt17(root)
    (root / "test").rename(root / "elsewhere")
    with pytest.raises(DataError, match="no image folders"):
        read_msmt17(root)


def test_folder_errors_name_the_folder_and_what_was_expected(tmp_path):
    with pytest.raises(DataError, match=r"does not exist \(expected a Market-1501 folder\)"):
        read_market1501(tmp_path / "nowhere")
    (tmp_path / "half" / "query").mkdir(parents=True)
    with pytest.raises(
        DataError,
        match=r"half is not a Market-1501 folder: missing bounding_box_train/, "
        r"bounding_box_test/",
    ):
        read_market1501(tmp_path / "half")
    for sub in ("bounding_box_train", "bounding_box_test"):
        (tmp_path / "half" / sub).mkdir()
    with pytest.raises(DataError, match=r"bounding_box_train: no Market-1501 image found"):
        read_market1501(tmp_path / "half")
    with pytest.raises(DataError, match="expected a 'labeled/' subfolder"):
        read_cuhk03_np(tmp_path / "half")


def test_dataset_specs(tmp_path):
    assert parse_dataset_spec("synthetic:s3://bucket/datasets/demo") == (
        "synthetic",
        "s3://bucket/datasets/demo",
    )
    assert parse_dataset_spec("Market1501:/data/m") == ("market1501", "/data/m")
    with pytest.raises(UserError, match="expected NAME:PATH"):
        parse_dataset_spec("/data/market")
    with pytest.raises(UserError, match="unknown name 'viper'.*market1501, dukemtmc, msmt17"):
        parse_dataset_spec("viper:/data/viper")
    split = read_dataset(f"market1501:{market_folder(tmp_path / 'm')}")
    assert split.name == "market1501" and len(split.gallery) == 4


def test_training_sources_are_datasets_unless_named_as_a_folder():
    from dppp.trainer.data.specs import dataset_location, parse_source

    assert parse_source("s3://bucket/ds") == ("synthetic", "s3://bucket/ds")  # a URL's scheme is no name
    assert parse_source("runs/demo") == ("synthetic", "runs/demo") and parse_source("runs/demo").is_dataset
    assert parse_source("synthetic:s3://bucket/ds") == ("synthetic", "s3://bucket/ds")
    assert parse_source("Market1501:/data/m") == ("market1501", "/data/m")
    assert not parse_source("market1501:/data/m").is_dataset
    assert dataset_location("synthetic:/data/ds") == "/data/ds"
    assert dataset_location("market1501:/data/m") == "market1501:/data/m"


def test_reading_twice_gives_the_same_split(tmp_path):
    root = market_folder(tmp_path / "m")
    assert read_market1501(root) == read_market1501(root)
