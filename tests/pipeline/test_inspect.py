"""`dppp shards ...` on real datasets, local and on the loopback S3 endpoint: ls, verify, stats, grid,
show, index, and the damage `verify` must report."""

from __future__ import annotations

import pytest
from PIL import Image

from dppp.cli import main
from dppp.dataset.format import fragment_name, record_name, shard_name
from dppp.dataset.index import write_index
from dppp.dataset.records import read_index, write_dataset_manifest
from dppp.dataset.shard_writer import Sample, write_shard
from dppp.foundation.storage.urls import open_storage
from dppp.pipeline.publish import publish_shard
from dppp.pipeline.verify import verify_dataset
from tests.conftest import FAKE_CREDENTIALS, pickle_payload, tar_bytes

IDS_PER_SHARD, VIEWS, SHARDS = 2, 3, 3


def manifest(**plan):
    """dataset.json as the generator writes it (dataset/manifest.py), with its plan."""
    return {
        "config": {"seed": 0, "identities": IDS_PER_SHARD * SHARDS},
        "plan": {
            "identities": IDS_PER_SHARD * SHARDS,
            "ids_per_shard": IDS_PER_SHARD,
            "shards": SHARDS,
            "images": SHARDS * IDS_PER_SHARD * VIEWS,
            **plan,
        },
    }


def build_dataset(storage, tmp_path, make_samples, *, samples_for=None):
    write_dataset_manifest(storage, manifest())
    for index in range(SHARDS):
        samples = make_samples(IDS_PER_SHARD, VIEWS, first_pid=index * IDS_PER_SHARD)
        if samples_for:
            samples = samples_for(index, samples)
        info = write_shard(samples, tmp_path / f"build-{index}.tar")
        publish_shard(storage, index, tmp_path / f"build-{index}.tar", info)
    write_index(storage)
    return storage


@pytest.fixture(params=["local", "s3"])
def dataset(request, tmp_path, make_samples):
    if request.param == "local":
        storage = open_storage(str(tmp_path / "dataset"))
    else:
        storage = open_storage(request.getfixturevalue("moto_s3").bucket() + "/datasets/demo")
    return build_dataset(storage, tmp_path, make_samples)


def run(capsys, *argv):
    code = main(["shards", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ls(dataset, capsys):
    code, out, _ = run(capsys, "ls", dataset.url)
    assert code == 0
    assert all(shard_name(i) in out for i in range(SHARDS))
    assert "total" in out and str(SHARDS * IDS_PER_SHARD * VIEWS) in out and f"{SHARDS}/{SHARDS}" in out


def test_verify_clean_dataset(dataset, capsys):
    code, out, _ = run(capsys, "verify", dataset.url, "--deep")
    assert code == 0, out
    assert f"OK: {SHARDS} shards, {SHARDS * IDS_PER_SHARD * VIEWS} samples verified" in out


def _truncate(storage):
    data = storage.read_bytes(shard_name(1))
    storage.put_bytes(data[: len(data) // 3], shard_name(1))


def _flip_byte(storage):
    data = bytearray(storage.read_bytes(shard_name(1)))
    data[len(data) // 4] ^= 0x01
    storage.put_bytes(bytes(data), shard_name(1))


DAMAGE = {
    "truncated": (_truncate, "truncated"),
    "flipped byte": (_flip_byte, "corrupted"),
    "missing record": (lambda s: s.delete(record_name(1)), "uncommitted"),
    "missing tar": (lambda s: s.delete(shard_name(1)), "missing"),
    "stray object": (lambda s: s.put_bytes(b"junk", "shards/notes.bin"), "extra"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_reports_damage(dataset, capsys, damage):
    harm, status = DAMAGE[damage]
    harm(dataset)
    report = verify_dataset(dataset.url)
    assert not report.ok
    bad = [c for c in report.checks if c.status != "ok"]
    assert len(bad) == 1 and bad[0].status == status, [(c.name, c.problems) for c in bad]
    code, out, _ = run(capsys, "verify", dataset.url)
    assert code == 1 and status in out and "FAILED" in out


def test_verify_flags_missing_manifest_and_stale_index(tmp_path, make_samples, capsys):
    storage = build_dataset(open_storage(str(tmp_path / "ds")), tmp_path, make_samples)
    storage.delete("dataset.json")
    samples = make_samples(1, 2, first_pid=100)
    publish_shard(storage, 7, tmp_path / "x.tar", write_shard(samples, tmp_path / "x.tar"))
    report = verify_dataset(storage.url)
    assert report.dataset_problems == ["dataset.json is missing"]
    assert any("index.parquet is stale" in note for note in report.notes)
    code, out, _ = run(capsys, "verify", str(tmp_path / "ds"))
    assert code == 1 and "dataset.json is missing" in out


def test_deep_verify_decodes_images(tmp_path, make_samples, capsys):
    def break_one_image(index, samples):
        if index != 2:
            return samples
        s = samples[0]
        return [Sample(s.key, s.image_bytes[:200], s.image_ext, s.metadata, s.prompt, s.pid)] + samples[1:]

    storage = build_dataset(
        open_storage(str(tmp_path / "ds")), tmp_path, make_samples, samples_for=break_one_image
    )
    assert verify_dataset(storage.url).ok  # checksums match: the record was made from this very tar
    report = verify_dataset(storage.url, deep=True)
    bad = [c for c in report.checks if c.status != "ok"]
    assert [c.name for c in bad] == [shard_name(2)] and "cannot decode jpg" in bad[0].problems[0][1]
    assert run(capsys, "verify", storage.url, "--deep")[0] == 1


def test_pickle_member_is_never_executed_by_any_command(tmp_path, make_samples, capsys):
    marker = tmp_path / "pwned"
    payload = pickle_payload(marker)
    dataset = open_storage(str(tmp_path / "ds"))
    build_dataset(dataset, tmp_path, make_samples)
    # Commit a shard whose tar carries a pickle member beside a normal sample: record and sha agree.
    good = make_samples(1, 1, first_pid=50)[0]
    evil = tmp_path / "evil.tar"
    evil.write_bytes(tar_bytes(good.members()[:2] + [(f"{good.key}.pickle", payload)] + good.members()[2:]))
    import hashlib

    from dppp.dataset.shard_writer import ShardInfo

    data = evil.read_bytes()
    publish_shard(
        dataset, 9, evil, ShardInfo(1, (50,), (good.key,), len(data), hashlib.sha256(data).hexdigest(), "jpg")
    )
    url = dataset.url
    assert run(capsys, "index", url)[0] == 0
    results = {
        "verify": run(capsys, "verify", url, "--deep"),
        "ls": run(capsys, "ls", url),
        "stats": run(capsys, "stats", url),
        "show": run(capsys, "show", url, good.key),
        "grid": run(capsys, "grid", url, "--out", str(tmp_path / "g.png"), "--shard", "9"),
    }
    assert results["verify"][0] == 1 and "unsafe" in results["verify"][1] and "pickle" in results["verify"][1]
    assert all(code == 0 for name, (code, _, _) in results.items() if name != "verify")
    assert not marker.exists()


def test_verify_calls_a_member_name_that_escapes_unsafe(tmp_path, make_samples):
    """The reader refuses a member named '../...' (UnsafeShardError): verify files it as unsafe, not corrupted."""
    import hashlib
    import json

    storage = build_dataset(open_storage(str(tmp_path / "ds")), tmp_path, make_samples)
    samples = make_samples(IDS_PER_SHARD, VIEWS, first_pid=IDS_PER_SHARD)
    data = tar_bytes([("../escape.json", b"{}")] + [m for s in samples for m in s.members()])
    storage.put_bytes(data, shard_name(1))  # its record states this very tar: only the name is wrong
    record = json.loads(storage.read_bytes(record_name(1)))
    record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    storage.put_bytes(json.dumps(record).encode(), record_name(1))
    check = next(c for c in verify_dataset(storage.url).checks if c.name == shard_name(1))
    assert ("unsafe", "member '../escape.json' contains '..': rejected") in check.problems, check.problems
    assert not any(kind == "corrupted" for kind, _ in check.problems), check.problems


def test_stats_and_plot(dataset, tmp_path, capsys):
    code, out, _ = run(capsys, "stats", dataset.url, "--plot", str(tmp_path / "stats.png"))
    assert code == 0
    assert f"{SHARDS * IDS_PER_SHARD * VIEWS} samples, {SHARDS * IDS_PER_SHARD} identities" in out
    assert "gender" in out and "upper_color" in out and "camid" in out
    with Image.open(tmp_path / "stats.png") as image:
        assert image.width > 200 and image.height > 200


def test_stats_leave_out_values_nobody_can_see(tmp_path, make_samples, capsys):
    """A taxonomy's hidden_when (a bag's colour without a bag): those samples are not counted for it."""
    from dppp.pipeline.browse import dataset_stats

    storage = build_dataset(open_storage(str(tmp_path / "dataset")), tmp_path, make_samples)
    taxonomy = {"identity": {"lower_color": {"hidden_when": {"gender": "man"}}, "gender": {}}}
    write_dataset_manifest(storage, {**manifest(), "taxonomy": taxonomy})
    stats = dataset_stats(storage.url)
    men = dict(stats.attributes["gender"])["man"]
    assert 0 < men < stats.samples and stats.hidden == {"lower_color": men}
    assert sum(n for _, n in stats.attributes["lower_color"]) == stats.samples - men
    assert sum(n for _, n in stats.attributes["upper_color"]) == stats.samples
    code, out, _ = run(capsys, "stats", storage.url, "--plot", str(tmp_path / "stats.png"))
    assert code == 0 and "(not visible)" in out


def test_grid(dataset, tmp_path, capsys):
    code, out, _ = run(capsys, "grid", dataset.url, "--out", str(tmp_path / "sheet.png"), "--n", "5")
    assert code == 0 and "5 samples" in out
    code, out, _ = run(capsys, "grid", dataset.url, "--out", str(tmp_path / "pid.png"), "--pid", "3")
    assert code == 0 and f"{VIEWS} samples" in out
    with Image.open(tmp_path / "pid.png") as image:
        assert image.width >= VIEWS * 32
    assert run(capsys, "grid", dataset.url, "--out", str(tmp_path / "x.png"), "--pid", "999")[0] == 2
    assert (
        run(capsys, "grid", dataset.url, "--out", str(tmp_path / "x.png"), "--pid", "1", "--shard", "0")[0]
        == 2
    )


def test_a_setting_is_named_by_the_library_and_by_its_flag_on_the_command_line(dataset, tmp_path, capsys):
    from dppp.foundation.errors import SettingError
    from dppp.pipeline.browse import contact_grid

    with pytest.raises(SettingError, match="^n: must be at least 1, got 0$") as info:
        contact_grid(dataset.url, n=0)
    assert info.value.setting == "n"
    code, _, err = run(capsys, "grid", dataset.url, "--out", str(tmp_path / "x.png"), "--n", "0")
    assert code == 2 and "error: --n: must be at least 1, got 0" in err
    assert not (tmp_path / "x.png").exists()


def test_show(dataset, tmp_path, make_samples, capsys):
    want = make_samples(IDS_PER_SHARD, VIEWS, first_pid=2)[4]
    code, out, _ = run(capsys, "show", dataset.url, want.key, "--out", str(tmp_path / "img.jpg"))
    assert code == 0 and want.prompt in out and '"camid"' in out and shard_name(1) in out
    assert (tmp_path / "img.jpg").read_bytes() == want.image_bytes
    code, _, err = run(capsys, "show", dataset.url, "p999999_v000")
    assert code == 2 and "no sample" in err
    assert run(capsys, "show", dataset.url, "../etc")[0] == 2


def test_index_rebuild(dataset, capsys):
    before = read_index(dataset)
    dataset.delete("index.parquet")
    assert run(capsys, "stats", dataset.url)[0] == 2  # stats needs the index, and says how to build it
    code, out, _ = run(capsys, "index", dataset.url)
    assert code == 0 and f"{SHARDS * IDS_PER_SHARD * VIEWS} rows" in out
    assert read_index(dataset).equals(before)


def test_user_errors_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "ls", "gs://bucket/x")
    assert code == 2 and "error:" in err and "unsupported" in err
    code, _, err = run(capsys, "verify", str(tmp_path / "nothing"))
    assert code == 2 and "no dataset at" in err
    code, _, err = run(capsys, "ls", "s3://")
    assert code == 2 and "no bucket" in err


def test_s3_output_never_shows_credentials(moto_s3, tmp_path, make_samples, capsys):
    storage = build_dataset(open_storage(moto_s3.bucket()), tmp_path, make_samples)
    storage.delete(record_name(0))
    outputs = [run(capsys, verb, storage.url) for verb in ("ls", "verify", "stats")]
    outputs.append(run(capsys, "ls", "s3://no-such-bucket-xyz/x"))
    assert outputs[-1][0] == 2 and "does not exist" in outputs[-1][2]
    text = "".join(out + err for _, out, err in outputs) + storage.read_bytes("dataset.json").decode()
    assert not any(value in text for value in FAKE_CREDENTIALS.values() if len(value) > 10)


@pytest.mark.parametrize(
    "url", ["s3://AKIDKEY:s3cr3t@bucket/x", "s3://AKIDKEY:s3/cr+3t@bucket/x", "s3://AKIDKEY@bucket/x"]
)
def test_credentials_in_an_s3_url_are_refused_without_showing_them(url, capsys):
    code, out, err = run(capsys, "ls", url)
    assert code == 2 and out == ""
    assert err == (
        "error: S3 URL 's3://bucket/x' with credentials (user:password@) before its bucket: refused; dppp "
        "takes credentials from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), a profile or "
        "the instance's role, never from a URL\n"
    )


def test_every_message_the_cli_prints_is_redacted(monkeypatch, capsys):
    from dppp.foundation.errors import UserError

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCY")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dppp")  # an id, not a secret: MinIO's user may be a word too

    def fail(url, config=None):  # a message quoting URL parts and the secret the process holds
        raise UserError(
            "'AKIDKEY:s3cr3t@bucket' and http://u:p4ss/w0rd@minio:9000/x and wJalrXUtnFEMI/K7MDENG+bPxRfiCY; "
            "mail me@home, http://minio:9000/b/k@v2, `dppp shards index s3://dppp/ds`"
        )

    monkeypatch.setattr("dppp.dataset.listing.list_shards", fail)
    code, _, err = run(capsys, "ls", "s3://bucket/x")
    assert code == 2
    assert err == (
        "error: 'bucket' and http://minio:9000/x and ***; mail me@home, http://minio:9000/b/k@v2, "
        "`dppp shards index s3://dppp/ds`\n"
    )


def test_parallel_verify_matches_sequential(tmp_path, make_samples):
    storage = build_dataset(open_storage(str(tmp_path / "ds")), tmp_path, make_samples)
    _flip_byte(storage)
    one = verify_dataset(storage.url)
    two = verify_dataset(storage.url, workers=2)
    assert [(c.name, c.status, c.samples, c.bytes, c.problems) for c in one.checks] == [
        (c.name, c.status, c.samples, c.bytes, c.problems) for c in two.checks
    ]
    assert not two.ok and [(c.name, c.status) for c in two.checks] == [(shard_name(1), "corrupted")]
    assert (one.verified, one.samples, one.bytes) == (
        two.verified,
        two.samples,
        two.bytes,
    ) and two.verified == 3


def test_verify_flags_an_identity_split_across_shards(tmp_path, make_samples):
    storage = build_dataset(open_storage(str(tmp_path / "ds")), tmp_path, make_samples)
    stray = [s for s in make_samples(1, 4, first_pid=0) if s.key == "p000000_v003"]
    publish_shard(storage, 5, tmp_path / "x.tar", write_shard(stray, tmp_path / "x.tar"))
    report = verify_dataset(storage.url)
    assert not report.ok and report.dataset_problems == [
        "1 identities split across shards: pid 0 in shards [0, 5]"
    ]


def _drop_shard(storage, index):
    """What a generation whose shard failed every attempt leaves: neither tar nor fragment nor record."""
    storage.delete(shard_name(index))
    storage.delete(fragment_name(index))
    storage.delete(record_name(index))


def test_planned_shard_without_tar_or_record_is_missing(dataset, capsys):
    _drop_shard(dataset, 1)
    report = verify_dataset(dataset.url)
    assert not report.ok and not report.dataset_problems
    assert [(c.name, c.status) for c in report.checks] == [
        (shard_name(1), "missing")
    ]  # clean shards are counted
    assert report.verified == 2 and "neither tar nor commit record" in report.checks[0].problems[0][1]
    code, out, _ = run(capsys, "verify", dataset.url)
    assert code == 1 and "missing" in out and "FAILED: 1 problem(s)" in out
    code, out, _ = run(capsys, "ls", dataset.url)
    assert code == 0 and shard_name(1) in out and "missing" in out and "2/3 (1 missing)" in out


def test_last_planned_shard_missing_and_shard_beyond_plan(tmp_path, make_samples):
    storage = build_dataset(open_storage(str(tmp_path / "ds")), tmp_path, make_samples)
    _drop_shard(storage, SHARDS - 1)  # the last one: nothing after it hints that it should exist
    extra = make_samples(1, 1, first_pid=90)
    publish_shard(storage, SHARDS + 1, tmp_path / "x.tar", write_shard(extra, tmp_path / "x.tar"))
    report = verify_dataset(storage.url)
    statuses = {c.index: c.status for c in report.checks}
    assert statuses == {SHARDS - 1: "missing", SHARDS + 1: "extra"} and report.verified == 3
    assert "beyond the plan's 3 shards" in report.checks[-1].problems[0][1]


def test_plan_totals_and_plan_problems(tmp_path, make_samples):
    storage = build_dataset(open_storage(str(tmp_path / "ds")), tmp_path, make_samples)
    assert verify_dataset(storage.url).ok
    write_dataset_manifest(storage, manifest(images=99, identities=7))
    assert verify_dataset(storage.url).dataset_problems == [
        "the committed shards hold 18 samples, dataset.json's plan 99",
        "the committed shards hold 6 identities, dataset.json's plan 7",
    ]
    write_dataset_manifest(storage, manifest(shards=-1))
    problems = verify_dataset(storage.url).dataset_problems
    assert len(problems) == 1 and "invalid plan (shards:" in problems[0]
    write_dataset_manifest(storage, {"config": {}})  # not made by `dppp generate`: nothing to check against
    report = verify_dataset(storage.url)
    assert report.ok and any("records no plan" in note for note in report.notes)


def test_verify_stops_when_asked_and_the_cli_says_how_far_it_got(tmp_path, make_samples, monkeypatch, capsys):
    """A stop request (SIGTERM / SIGINT) ends verify after the shards in flight, with one line, exit 143."""
    import os
    import signal

    from dppp.foundation.graceful_stop import StopRequest

    storage = build_dataset(open_storage(str(tmp_path / "dataset")), tmp_path, make_samples)
    stop = StopRequest()
    stop.request(signal.SIGTERM)
    report = verify_dataset(storage.url, stop=stop, threads=1)
    assert report.stopped and report.verified < report.committed == SHARDS

    def verify_then_signal(*args, **kwargs):  # the signal arrives while the shards are being verified
        os.kill(os.getpid(), signal.SIGTERM)
        kwargs["stop"].wait(5)
        return verify_dataset(*args, **{**kwargs, "threads": 1})

    monkeypatch.setattr("dppp.pipeline.verify.verify_dataset", verify_then_signal)
    code, _, err = run(capsys, "verify", storage.url)
    assert (
        code == 143
        and err.strip()
        == f"stopped: 0 of {SHARDS} committed shards verified (0 with problems so far); rerun to verify"
    )
