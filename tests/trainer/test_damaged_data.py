"""`dppp train` on damaged data: member size limits honoured by the streaming loader, damage the listing
shows refused before Ray starts, damage inside a tar stopping a run at once with one line."""

from __future__ import annotations

import pytest

from pipeline.shards.limits import MemberLimits
from pipeline.shards.reader import OversizedMemberError
from pipeline.storage.config import StorageConfig
from tests.trainer.test_data import write_dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("damaged") / "ds"), n_ids=6, ids_per_shard=3)


def test_the_loader_reads_with_the_member_limits_of_its_storage_config(small_dataset):
    from trainer.data.sources import open_training_data
    from trainer.data.unit_reader import UnitReader

    tight = StorageConfig(member_limits=MemberLimits(json_max=100))  # every json here is ~300 bytes
    data = open_training_data([small_dataset], tight)
    unit = data.units[0]
    with pytest.raises(OversizedMemberError, match=rf"^{unit.name}: member 'p000000_v000.json' is \d+ B "):
        UnitReader(data, style_attributes=["camid"]).read(unit)  # style labels: the json is read
    assert len(UnitReader(data).read(unit)) == 3  # images only: the json is stepped over, never read
