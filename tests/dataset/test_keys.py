"""The one sample-key definition (dataset/keys.py): the shape shards name samples by, and back."""

from dppp.dataset.keys import KEY_RE, SAMPLE_KEY_RE, parse_sample_key, sample_key, view_record
from dppp.prompts.spec import ViewSpec


def test_sample_key_format_is_fixed():
    # shards, records and index rows hold these bytes: a change would change every dataset
    assert sample_key(12, 3) == "p000012_v003"
    assert sample_key(0, 0) == "p000000_v000"
    assert sample_key(1234567, 1000) == "p1234567_v1000"


def test_keys_round_trip_sort_as_pid_view_and_are_dot_free():
    pairs = [(pid, view) for pid in (0, 1, 9, 10, 999999) for view in (0, 1, 99, 100)]
    keys = [sample_key(pid, view) for pid, view in pairs]
    assert [parse_sample_key(key) for key in keys] == pairs
    assert sorted(keys) == keys
    assert all(KEY_RE.fullmatch(key) and SAMPLE_KEY_RE.fullmatch(key) for key in keys)


def test_parse_refuses_other_keys():
    for key in ("", "p12", "p000012_v", "x000012_v003", "p000012_v003.jpg", "p-1_v0", "p000012_v003 "):
        assert parse_sample_key(key) is None
    assert not KEY_RE.fullmatch("p1.v2") and not KEY_RE.fullmatch("p1/v2") and not KEY_RE.fullmatch("a" * 65)


def test_view_record_leads_with_the_key():
    view = ViewSpec(
        pid=5, view=2, camid=1, seed=7, identity_seed=3, attributes={"a": "b"}, prompt="p", negative_prompt=""
    )
    record = view_record(view)
    assert next(iter(record)) == "key" and record["key"] == "p000005_v002"
    assert {k: v for k, v in record.items() if k != "key"} == view.record()
