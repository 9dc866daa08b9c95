"""benchmarks/curation_defects.py, the curation benchmark's planted defects: a committed, verifiable copy
in which exactly the planted samples' images changed, kinds in turn."""

from __future__ import annotations

import tarfile

from benchmarks.curation_defects import KINDS, corrupt_dataset
from dppp.cli import main
from tests.trainer.test_data import write_dataset


def images(path) -> dict[str, bytes]:
    out = {}
    for tar_path in sorted((path / "shards").glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    out[member.name.partition(".")[0]] = tar.extractfile(member).read()
    return out


def test_planted_copy_changes_only_the_planted_images_and_stays_verifiable(tmp_path):
    clean = tmp_path / "clean"
    write_dataset(str(clean), n_ids=6, ids_per_shard=3)
    planted = corrupt_dataset(clean, tmp_path / "bad", 0.5, seed=1)
    before, after = images(clean), images(tmp_path / "bad")
    assert len(planted) == round(0.5 * len(before))
    assert sorted(set(planted.values())) == sorted(KINDS)  # every kind, in turn
    assert all(before[key] != after[key] for key in planted)
    assert all(before[key] == after[key] for key in before if key not in planted)
    assert corrupt_dataset(clean, tmp_path / "again", 0.5, seed=1) == planted  # seeded
    assert main(["shards", "verify", str(tmp_path / "bad")]) == 0  # records follow the new tars
