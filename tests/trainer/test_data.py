"""The streaming P x K loader on real shards (local and loopback S3): plan, split, batches, resume."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from dppp.foundation.errors import DataError
from dppp.trainer.data.config import DataConfig
from tests.conftest import make_samples

TAXONOMY = {
    "identity": {
        "gender": {"values": {"man": 1, "woman": 1}},
        "upper_color": {"values": {c: 1 for c in ("red", "blue", "green", "black")}},
    },
    "view": {"scene": {"values": {"street": 1, "campus": 1, "mall": 1}}},
    "cameras": [{"camid": c} for c in range(4)],
}


def views_of(pid: int) -> int:
    return 2 + pid % 5  # 2..6 views: some identities have fewer than K images


def write_dataset(
    url: str, n_ids: int = 24, ids_per_shard: int = 3, first_pid: int = 0, commit: int | None = None
) -> str:
    """A dppp dataset of procedural JPEGs: dataset.json, tars, records (the first `commit` shards only)."""
    import tempfile

    from dppp.dataset.records import write_dataset_manifest
    from dppp.dataset.shard_writer import write_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.pipeline.publish import publish_shard

    storage = open_storage(url)
    write_dataset_manifest(storage, {"format": "dppp-dataset/1", "taxonomy": TAXONOMY})
    with tempfile.TemporaryDirectory() as tmp:
        for index, start in enumerate(range(first_pid, first_pid + n_ids, ids_per_shard)):
            samples = [
                s
                for pid in range(start, min(start + ids_per_shard, first_pid + n_ids))
                for s in make_samples(1, views_of(pid), first_pid=pid, size=(32, 64))
            ]
            path = Path(tmp) / f"{index}.tar"
            info = write_shard(samples, path)
            if commit is None or index < commit:
                publish_shard(storage, index, path, info)
            else:  # an interrupted run's tar: no record, so not committed
                storage.put_file(path, f"shards/shard-{index:06d}.tar")
    return url


@pytest.fixture(scope="session")
def dataset_url(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("data") / "ds"))


def config(**overrides) -> DataConfig:
    fields = dict(ids_per_batch=4, images_per_id=3, num_workers=0, pool_identities=6)
    return DataConfig(**{**fields, **overrides})


def test_open_reads_only_committed_shards(tmp_path):
    from dppp.trainer.data.sources import open_training_data

    url = write_dataset(str(tmp_path / "partial"), n_ids=12, ids_per_shard=3, commit=2)
    data = open_training_data([url])
    assert len(data.units) == 2
    assert data.num_classes == 6
    assert data.num_images == sum(views_of(p) for p in range(6))
    assert data.style_values["camid"] == ("0", "1", "2", "3")
    assert data.style_vocab == {"camid": 4, "gender": 2, "scene": 3, "upper_color": 4}


def test_no_committed_shard_is_a_clear_error(tmp_path):
    from dppp.trainer.data.sources import open_training_data

    url = write_dataset(str(tmp_path / "empty"), n_ids=3, ids_per_shard=3, commit=0)
    with pytest.raises(DataError, match="no committed shard"):
        open_training_data([url])
    with pytest.raises(DataError, match="not a dppp dataset"):
        open_training_data([str(tmp_path / "nothing-here")])


def test_two_sources_keep_their_identities_apart(tmp_path, dataset_url):
    from dppp.trainer.data.sources import open_training_data

    other = write_dataset(str(tmp_path / "other"), n_ids=6, ids_per_shard=3)  # pids 0..5 again
    data = open_training_data([dataset_url, other])
    assert data.num_classes == 24 + 6
    labels = [i.label for u in data.units for i in u.identities]
    assert sorted(labels) == list(range(30))


def test_shards_for_rank_is_a_disjoint_equal_seeded_split():
    from dppp.trainer.data.plan import shards_for_rank

    for world in (1, 2, 3):
        slices = [shards_for_rank(8, epoch=1, seed=5, rank=r, world=world) for r in range(world)]
        flat = [u for s in slices for u in s]
        assert len(flat) == len(set(flat)) == 8 // world * world
        assert {len(s) for s in slices} == {8 // world}
    assert shards_for_rank(8, 1, 5, 0, 2) == shards_for_rank(8, 1, 5, 0, 2)
    assert shards_for_rank(8, 1, 5, 0, 2) != shards_for_rank(8, 2, 5, 0, 2)
    with pytest.raises(DataError, match="cannot feed 3"):
        shards_for_rank(2, 0, 0, 0, 3)


def test_plan_process_batches_are_p_distinct_identities_of_k_images():
    from dppp.trainer.data.plan import plan_process

    sizes = [[5, 2, 9], [4, 4, 1], [7, 3, 3]]
    batches = plan_process(
        sizes, np.random.default_rng(0), ids_per_batch=4, images_per_id=3, pool_identities=6
    )
    assert batches
    used = Counter()
    for batch in batches:
        identities = [(p.unit, p.identity) for p in batch.picks]
        assert len(set(identities)) == 4
        for pick in batch.picks:
            assert pick.unit <= batch.ready_after
            assert len(pick.images) == 3
            size = sizes[pick.unit][pick.identity]
            assert all(0 <= i < size for i in pick.images)
            if size >= 3:
                assert len(set(pick.images)) == 3
            used[(pick.unit, pick.identity)] += 1
    for (unit, identity), times in used.items():  # never more chunks than the identity has
        assert times <= max(1, sizes[unit][identity] // 3)


def test_round_robin_take_matches_dataloader_order():
    from dppp.trainer.data.plan import round_robin_take

    assert round_robin_take([3, 1, 2], 6) == [3, 1, 2]
    assert round_robin_take([3, 1, 2], 4) == [2, 1, 1]
    assert round_robin_take([3, 1, 2], 2, start=4) == [1, 0, 1]
    with pytest.raises(ValueError):
        round_robin_take([1, 1], 3)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_get_disjoint_shards_same_steps_and_exact_pk_batches(dataset_url, num_workers):
    from dppp.trainer.data.loader import make_loader
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    data = open_training_data([dataset_url])
    cfg = config(num_workers=num_workers)
    seen_keys, steps = [], []
    for rank in range(2):
        stream = PKBatchStream(
            data, cfg, (64, 32), seed=3, epoch=1, rank=rank, world=2, style_attributes=("camid", "scene")
        )
        batches = list(make_loader(stream, cfg))
        assert len(batches) == stream.steps
        steps.append(stream.steps)
        keys = set()
        for batch in batches:
            assert batch["pixel_values"].shape == (12, 3, 64, 32)
            assert batch["pixel_values"].dtype == torch.float32
            pids = batch["pids"].tolist()
            counts = Counter(pids)
            assert len(counts) == 4 and set(counts.values()) == {3}
            assert pids == sorted(pids, key=pids.index)  # K images of one identity are contiguous
            assert set(batch["style"]) == {"camid", "scene"}
            for key, camid in zip(batch["keys"], batch["style"]["camid"].tolist(), strict=True):
                assert camid == int(key.split("_v")[1]) % 4  # make_samples: camid = view % 4
            keys |= set(batch["keys"])
        pid_of = {i.label: int(i.members[0][1:7]) for u in data.units for i in u.identities}
        assert all(
            pid_of[p] == int(k[1:7])
            for b in batches
            for p, k in zip(b["pids"].tolist(), b["keys"], strict=True)
        )
        seen_keys.append({k[:7] for k in keys})  # identities (p000123) this rank trained on
    assert steps[0] == steps[1] > 0
    assert not seen_keys[0] & seen_keys[1]  # whole shards are disjoint, so identities are too


def test_batches_are_deterministic_and_resume_skips_exactly(dataset_url):
    from dppp.trainer.data.loader import make_loader
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    data = open_training_data([dataset_url])
    cfg = config(num_workers=2)

    def run(skip=0):
        stream = PKBatchStream(data, cfg, (64, 32), seed=1, epoch=0, rank=0, world=1, skip=skip)
        return list(make_loader(stream, cfg))

    full, again, resumed = run(), run(), run(skip=2)
    assert len(full) >= 4
    for a, b in zip(full, again, strict=True):
        assert a["keys"] == b["keys"] and torch.equal(a["pixel_values"], b["pixel_values"])
    assert len(resumed) == len(full) - 2
    for a, b in zip(full[2:], resumed, strict=True):
        assert a["keys"] == b["keys"] and torch.equal(a["pixel_values"], b["pixel_values"])


def test_stream_from_loopback_s3_matches_local(moto_s3, dataset_url, tmp_path):
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    url = write_dataset(moto_s3.bucket() + "/ds", n_ids=24, ids_per_shard=3)
    s3, local = open_training_data([url]), open_training_data([dataset_url])
    assert s3.units[0].name.startswith("s3://")
    cfg = config(num_workers=0)
    remote = list(PKBatchStream(s3, cfg, (64, 32), seed=2, epoch=0))
    here = list(PKBatchStream(local, cfg, (64, 32), seed=2, epoch=0))
    assert [b["keys"] for b in remote] == [b["keys"] for b in here]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(remote, here, strict=True))


def test_too_few_identities_per_rank_is_a_clear_error(dataset_url):
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    data = open_training_data([dataset_url])
    with pytest.raises(DataError, match="no batch of 40 identities"):
        PKBatchStream(data, config(ids_per_batch=40), (64, 32), seed=0, epoch=0, world=2)


def test_market_folder_trains_through_the_same_interface(tmp_path):
    from PIL import Image

    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    root = tmp_path / "market"
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (root / sub).mkdir(parents=True)
    for pid in range(1, 11):
        for view in range(4):
            buffer = io.BytesIO()
            Image.new("RGB", (32, 64), (pid * 20, view * 50, 99)).save(buffer, format="JPEG")
            name = f"{pid:04d}_c{view % 3 + 1}s1_{view:06d}_00.jpg"
            (root / "bounding_box_train" / name).write_bytes(buffer.getvalue())
    for sub in ("bounding_box_test", "query"):
        Image.new("RGB", (32, 64)).save(root / sub / "0001_c1s1_000000_00.jpg")
    data = open_training_data([f"market1501:{root}"], folder_ids_per_unit=2)
    assert data.num_classes == 10 and len(data.units) == 5
    assert data.style_values == {"camid": ("1", "2", "3")}
    batches = list(PKBatchStream(data, config(), (64, 32), seed=0, epoch=0, style_attributes=("camid",)))
    assert batches and all(Counter(b["pids"].tolist()).most_common()[-1][1] == 3 for b in batches)
    with pytest.raises(DataError, match="not labelled in every training source"):
        PKBatchStream(data, config(), (64, 32), seed=0, epoch=0, style_attributes=("illumination",))


def test_all_images_stream_covers_every_image_once(dataset_url):
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import AllImagesStream

    data = open_training_data([dataset_url])
    seen = Counter()
    for rank in range(2):
        for batch in AllImagesStream(data, (64, 32), rank=rank, world=2, batch_size=16):
            seen.update(batch["pids"].tolist())
    assert sum(seen.values()) == data.num_images
    assert len(seen) == data.num_classes


@pytest.mark.parametrize("processes", [1, 2])
def test_persistent_loader_processes_give_each_epoch_the_batches_of_one_loader_per_epoch(
    dataset_url, processes
):
    """One set of loader processes walks every epoch (no fork per epoch), yet each epoch's batches are
    exactly one fresh DataLoader's, in its order, also for a resumed first epoch (skip) and when the
    processes' shares of an epoch differ (the pads keep DataLoader's round robin aligned per epoch)."""
    from dppp.trainer.data.loader import epoch_batches, make_loader
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    data = open_training_data([dataset_url])
    cfg = config(num_workers=processes)

    def make_stream(epoch: int) -> PKBatchStream:
        return PKBatchStream(data, cfg, (64, 32), seed=4, epoch=epoch, skip=3 if epoch == 1 else 0)

    epochs = [1, 2, 3]
    expected = [[b["keys"] for b in make_loader(make_stream(e), cfg)] for e in epochs]
    if processes == 2:  # the case the pads exist for
        assert any(len(set(make_stream(e).process_shares())) > 1 for e in epochs)
    got = [[b["keys"] for b in batches] for _, batches in epoch_batches(make_stream, epochs, cfg)]
    assert got == expected and len(got) == 3
    assert [len(g) for g in got] == [make_stream(e).steps - make_stream(e).skip for e in epochs]
    # A caller that leaves an epoch early still gets the next epoch's batches, not the leftovers.
    walked = epoch_batches(make_stream, epochs, cfg)
    _, first = next(walked)
    next(first)
    _, second = next(walked)
    assert [b["keys"] for b in second] == expected[1]


def _reference_augment(data: bytes, rng, cfg, size) -> torch.Tensor:
    """The training augmentation written plainly, one image at a time (pad the whole image, crop,
    normalise by the textbook formula, erase): what the loader's batch path must reproduce."""
    from dppp.trainer.data.transforms import CLIP_MEAN, CLIP_STD, decode_rgb

    height, width = size
    image = decode_rgb(data, "ref", size)
    if image.size != (width, height):
        image = image.resize((width, height))
    array = np.array(image)
    if rng.random() < cfg.flip_p:
        array = array[:, ::-1]
    padded = np.zeros((height + 2 * cfg.pad, width + 2 * cfg.pad, 3), dtype=np.uint8)
    padded[cfg.pad : cfg.pad + height, cfg.pad : cfg.pad + width] = array
    top, left = rng.integers(0, 2 * cfg.pad + 1, size=2)
    array = padded[top : top + height, left : left + width]
    tensor = torch.from_numpy(((array / 255.0 - CLIP_MEAN) / CLIP_STD).astype(np.float32)).permute(2, 0, 1)
    if rng.random() < cfg.erase_p:
        for _ in range(10):
            target = rng.uniform(*cfg.erase_area) * height * width
            ratio = float(np.exp(rng.uniform(np.log(cfg.erase_aspect), -np.log(cfg.erase_aspect))))
            h, w = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
            if 0 < h < height and 0 < w < width:
                y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                tensor[:, y : y + h, x : x + w] = 0.0
                break
    return tensor


@pytest.mark.parametrize("erase_p", [0.5, 1.0])
def test_batch_pixels_are_the_plain_per_image_augmentation(dataset_url, erase_p):
    """The loader writes uint8 pixels into one batch array, pad-crops without a padded copy and
    normalises the whole batch at once: the same numbers, drawn in the same order, as the plain path."""
    from dppp.dataset.shard_reader import read_shard
    from dppp.trainer.data.config import AugmentConfig
    from dppp.trainer.data.loader import make_loader
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    data = open_training_data([dataset_url])
    augment = AugmentConfig(flip_p=0.5, pad=5, erase_p=erase_p)
    cfg = config(augment=augment)
    size = (64, 32)
    stream = PKBatchStream(data, cfg, size, seed=3, epoch=1)
    images = {}
    for unit in data.units:
        images.update(
            {s["__key__"]: s["jpg"] for s in read_shard(f"{unit.root}/{unit.tar}", include={"jpg"})}
        )
    batches = list(make_loader(stream, cfg))
    erased = 0
    for b, batch in enumerate(batches):
        rng = np.random.default_rng([3, 1, 0, 0, b, 0x4155])  # the loader's per-batch seed
        expected = torch.stack([_reference_augment(images[key], rng, augment, size) for key in batch["keys"]])
        assert torch.allclose(batch["pixel_values"], expected, atol=1e-5)
        erased += int((batch["pixel_values"] == 0).all(dim=1).any(dim=(1, 2)).sum())
    assert erased > 0 and (erase_p < 1 or erased == sum(len(b["keys"]) for b in batches))


def test_one_image_transform_matches_the_batch_path():
    """EvalTransform / ReidAugment called on one image (evaluation, the folder baseline) give the batch
    path's pixels bit for bit."""
    from dppp.trainer.data.config import AugmentConfig
    from dppp.trainer.data.transforms import ReidAugment, erase, normalise_batch

    jpgs = [s.image_bytes for s in make_samples(1, 4, size=(32, 64))]
    transform = ReidAugment(AugmentConfig(erase_p=1.0, pad=4), (64, 32))
    one = [transform(j, np.random.default_rng(i)) for i, j in enumerate(jpgs)]
    pixels = np.empty((len(jpgs), 64, 32, 3), dtype=np.uint8)
    rects = [transform.pixels_into(pixels[i], j, np.random.default_rng(i)) for i, j in enumerate(jpgs)]
    batch = normalise_batch(pixels)
    for image, rect in zip(batch, rects, strict=True):
        erase(image, rect)
    assert all(r is not None for r in rects)
    assert torch.equal(torch.stack(one), batch)
