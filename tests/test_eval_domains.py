"""The domain-generalization benchmark's two domains (benchmarks/bench_domain_generalization.py): valid
taxonomies that split the shipped cameras and illuminations, every listed value reachable, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_domain_generalization")


@pytest.fixture(scope="module")
def domains(bench, tmp_path_factory):
    return bench.write_domains(tmp_path_factory.mktemp("domains"))


def test_domains_are_valid_taxonomies_that_split_cameras_and_lights(bench, domains):
    from prompts.taxonomy import load_taxonomy

    source, target = load_taxonomy(domains["source"]), load_taxonomy(domains["target"])
    assert {c.camid for c in source.cameras} == set(bench.SOURCE_CAMERAS)
    assert {c.camid for c in target.cameras} == set(bench.TARGET_CAMERAS)
    assert set(source.values("illumination")) == set(bench.SOURCE_LIGHTS)
    assert set(target.values("illumination")) == set(bench.TARGET_LIGHTS)
    assert not {c.profile["scene"] for c in source.cameras} & {c.profile["scene"] for c in target.cameras}
    shipped = load_taxonomy(None)
    for name in shipped.identity_names:  # who people are does not change between the domains
        assert source.values(name) == target.values(name) == shipped.values(name)


@pytest.mark.parametrize("domain", ["source", "target"])
def test_every_camera_and_light_of_a_domain_is_reachable(bench, domains, tmp_path, domain):
    cameras, lights = {"source": (bench.SOURCE_CAMERAS, bench.SOURCE_LIGHTS),
                       "target": (bench.TARGET_CAMERAS, bench.TARGET_LIGHTS)}[domain]  # fmt: skip
    config = bench.generate_config(domains[domain], tmp_path / "ds", 1, 10, bench.SIZES["small"])
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
    config = bench.generate_config(path, tmp_path / "ds", 1, 10, bench.SIZES["small"])
    with pytest.raises(SystemExit, match="fluorescent indoor lighting"):
        bench.check_reachable(config, outdoor, ("bright midday sun", "fluorescent indoor lighting"))
