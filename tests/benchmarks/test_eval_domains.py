"""The domain-generalization benchmark's two domains (benchmarks/bench_domain_generalization.py): valid
taxonomies that keep every camera and split the shipped illuminations, every listed value reachable,
nothing else; and its statistics (paired differences with t intervals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_domain_generalization")


@pytest.fixture(scope="module")
def domains(bench, tmp_path_factory):
    return bench.write_domains(tmp_path_factory.mktemp("domains"))


def test_domains_are_valid_taxonomies_that_share_cameras_and_split_lights(bench, domains):
    from dppp.prompts.taxonomy import load_taxonomy

    source, target = load_taxonomy(domains["source"]), load_taxonomy(domains["target"])
    assert {c.camid for c in source.cameras} == {c.camid for c in target.cameras} == set(range(1, 11))
    assert set(source.values("illumination")) == set(bench.SOURCE_LIGHTS)
    assert set(target.values("illumination")) == set(bench.TARGET_LIGHTS)
    assert not set(bench.SOURCE_LIGHTS) & set(bench.TARGET_LIGHTS)
    shipped = load_taxonomy(None)
    for name in shipped.identity_names:  # who people are does not change between the domains
        assert source.values(name) == target.values(name) == shipped.values(name)


@pytest.mark.parametrize("domain", ["source", "target"])
def test_every_camera_and_light_of_a_domain_is_reachable(bench, domains, tmp_path, domain):
    cameras, lights = {
        "source": (bench.SOURCE_CAMERAS, bench.SOURCE_LIGHTS),
        "target": (bench.TARGET_CAMERAS, bench.TARGET_LIGHTS),
    }[domain]
    config = bench.generate_config(domains[domain], tmp_path / "ds", 1, 10, bench.SIZES["v2"])
    bench.check_reachable(config, cameras, lights)  # raises SystemExit on a miss


def test_a_domain_with_an_unreachable_light_is_caught(bench, domains, tmp_path):
    """An indoor light listed, but only an outdoor camera left: the taxonomy's indoor/outdoor rules forbid
    that light everywhere, so it would silently never be rendered; the check refuses instead."""
    import yaml

    base = yaml.safe_load((ROOT / "prompts" / "taxonomy.yaml").read_text())
    outdoor = (1, 2, 5)  # far, medium and near: every camera distance the templates name
    broken = bench.domain_taxonomy(base, outdoor, ("bright midday sun", "fluorescent indoor lighting"))
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    config = bench.generate_config(path, tmp_path / "ds", 1, 10, bench.SIZES["v2"])
    with pytest.raises(SystemExit, match="fluorescent indoor lighting"):
        bench.check_reachable(config, outdoor, ("bright midday sun", "fluorescent indoor lighting"))


def test_paired_differences_and_their_t_intervals(bench):
    # Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.303 -> 2 +- 4.303 / sqrt(3)
    p = bench.paired([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert p["mean"] == pytest.approx(2.0) and p["n"] == 3
    assert p["ci95"] == pytest.approx([2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5])
    assert bench.paired([1.0], [0.0])["ci95"] == [None, None]
    rows = [
        {
            "name": n,
            "group": "main",
            "backbone": "pretrained",
            "seed": s,
            "eval": {"source-test": {"mAP": v + 10, "rank1": v}, "target-test": {"mAP": v, "rank1": v}},
        }
        for s in range(3)
        for n, v in (("bot", 10.0 + s), ("pdm", 12.0 + 2 * s))
    ]
    result = bench.collect(rows)
    assert result["methods"]["pdm"]["target_mAP"] == [12.0, 14.0, 16.0]
    assert result["paired"]["pdm-bot"]["mean"] == pytest.approx(3.0)
    assert result["paired"]["pdm-clipreid"]["n"] == 0  # clipreid did not run: no pairs
