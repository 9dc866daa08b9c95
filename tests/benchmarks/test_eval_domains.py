"""The domain-generalization benchmark v3 (benchmarks/bench_domain_generalization.py): its domains are valid
taxonomies that split the shipped illuminations, every listed camera and light is reachable and nothing
else; the same-/cross-light mAP split means what it says; and its statistics (paired differences with t
intervals, the per-method collection)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import load_benchmark
from tests.helpers.metrics_reference import reference_eval_market1501

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_domain_generalization")


def _domain(bench, tmp_path, lights, look="illustration"):
    cameras = bench.cameras_for(lights)
    taxonomy = bench.write_taxonomy(tmp_path, "d", lights, cameras)
    return bench.generate_config(taxonomy, tmp_path / "ds", look, 1, 10, bench.SIZES["v3"]), cameras


def test_source_and_target_split_the_lights_and_keep_every_camera_and_person(bench, tmp_path):
    from dppp.prompts.taxonomy import load_taxonomy

    shipped = load_taxonomy(None)
    assert set(bench.SOURCE_LIGHTS) | set(bench.TARGET_LIGHTS) == set(shipped.values("illumination"))
    assert not set(bench.SOURCE_LIGHTS) & set(bench.TARGET_LIGHTS)
    for lights in (bench.SOURCE_LIGHTS, bench.TARGET_LIGHTS):
        domain = load_taxonomy(bench.write_taxonomy(tmp_path, "d", lights, bench.cameras_for(lights)))
        assert {c.camid for c in domain.cameras} == set(range(1, 11))
        assert set(domain.values("illumination")) == set(lights)
        for name in shipped.identity_names:  # who people are does not change between the domains
            assert domain.values(name) == shipped.values(name)
    assert set(bench.FOLD_LIGHTS) <= set(bench.SOURCE_LIGHTS)


@pytest.mark.parametrize(
    "which", ["source", "target", "fold-train-0", "fold-train-1", "fold-val-0", "fold-val-1"]
)
def test_every_camera_and_light_of_each_domain_is_reachable(bench, tmp_path, which):
    kind, _, n = which.partition("-")
    lights = {"source": bench.SOURCE_LIGHTS, "target": bench.TARGET_LIGHTS}.get(which)
    if which.startswith("fold-train"):
        lights = tuple(x for x in bench.SOURCE_LIGHTS if x != bench.FOLD_LIGHTS[int(n[-1])])
    elif which.startswith("fold-val"):
        lights = (bench.FOLD_LIGHTS[int(n[-1])],)  # one light: only the cameras that can see it
    config, cameras = _domain(bench, tmp_path, lights)
    bench.check_reachable(config, lights, cameras)  # raises SystemExit on a miss
    if len(lights) == 1:
        indoor = lights[0] in bench.INDOOR_LIGHTS
        assert cameras and all((c in bench.INDOOR_CAMERAS) == indoor for c in cameras)


def test_a_domain_with_an_unreachable_light_is_caught(bench, tmp_path):
    """An indoor light listed, but only outdoor cameras kept: the taxonomy's indoor/outdoor rules forbid
    that light everywhere, so it would silently never be rendered; the check refuses instead."""
    base = yaml.safe_load((ROOT / "prompts" / "taxonomy.yaml").read_text())
    outdoor = (1, 2, 5)
    lights = ("bright midday sun", "fluorescent indoor lighting")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(bench.domain_taxonomy(base, lights, outdoor), sort_keys=False))
    config = bench.generate_config(path, tmp_path / "ds", "photo", 1, 10, bench.SIZES["v3"])
    assert config.renderer.look == "photo"
    with pytest.raises(SystemExit, match="fluorescent indoor lighting"):
        bench.check_reachable(config, lights, outdoor)


def test_mean_ap_is_the_market_protocol_and_splits_matches_by_light(bench):
    rng = np.random.default_rng(0)
    q_pid, g_pid = rng.integers(0, 6, 20), rng.integers(0, 6, 80)
    q_cam, g_cam = rng.integers(0, 3, 20), rng.integers(0, 3, 80)
    dist = rng.random((20, 80))
    expected = reference_eval_market1501(dist, q_pid, g_pid, q_cam, g_cam)[1]
    assert bench.mean_ap(dist, q_pid, g_pid, q_cam, g_cam, None) == pytest.approx(expected)

    # One query (pid 0, camera 0, light A); gallery by distance: a cross-light match, a stranger, a
    # same-light match. Same-light mAP ignores the cross-light match (AP 1/2); cross-light ignores the
    # same-light one (AP 1); all together AP (1/1 + 2/3) / 2.
    dist = np.array([[0.1, 0.2, 0.3]])
    args = (np.array([0]), np.array([0, 1, 0]), np.array([0]), np.array([1, 1, 1]))
    same = np.array([[False, True, True]])  # gallery lights B, A, A
    assert bench.mean_ap(dist, *args, same) == pytest.approx(0.5)
    assert bench.mean_ap(dist, *args, ~same) == pytest.approx(1.0)
    assert bench.mean_ap(dist, *args, None) == pytest.approx((1 + 2 / 3) / 2)


def test_paired_differences_and_their_t_intervals(bench):
    # Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.303 -> 2 +- 4.303 / sqrt(3)
    p = bench.paired([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert p["mean"] == pytest.approx(2.0) and p["n"] == 3
    assert p["ci95"] == pytest.approx([2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5])
    assert bench.paired([1.0], [0.0])["ci95"] == [None, None]


def test_collect_pairs_seeds_reads_the_chosen_reading_and_compares_alternatives(bench):
    def figures(v):
        target = {"mAP": v, "rank1": v, "same_light_mAP": v + 5, "cross_light_mAP": v - 5}
        return {"source": {"mAP": v + 10, "rank1": v}, "target": target}

    rows = [
        {
            "name": n,
            "group": "main",
            "backbone": "imagetext",
            "seed": s,
            "reading": reading,
            "eval": {reading: figures(v), **({"bn/1": figures(v - 1)} if n == "pdm" else {})},
        }
        for s in range(3)
        for n, v, reading in (
            ("untrained", 9.0, "pre_bn/1"),
            ("bot", 10.0 + s, "pre_bn/1"),
            ("pdm", 12.0 + 2 * s, "pre_bn/0.5"),
        )
    ]
    result = bench.collect(rows)
    assert result["methods"]["pdm"]["target_mAP"] == [12.0, 14.0, 16.0]
    assert result["methods"]["pdm"]["target_cross_light_mAP"] == [7.0, 9.0, 11.0]
    assert result["paired"]["pdm-bot"]["mean"] == pytest.approx(3.0)
    assert result["paired"]["pdm-untrained"]["mean"] == pytest.approx(5.0)
    assert result["paired"]["pdm-clipreid"]["n"] == 0  # clipreid did not run: no pairs
    assert result["readings"]["pdm"]["bn/1"]["mean"] == pytest.approx(1.0)
    assert "bot" not in result["readings"]  # read one way only
    assert "| pdm-untrained | 3 | 5.00" in bench.tables(result)


def test_a_missing_or_incomplete_selection_record_is_refused_in_one_line(bench, tmp_path):
    with pytest.raises(SystemExit, match="not a readable JSON file"):
        bench.read_selection(tmp_path / "none.json")
    partial = tmp_path / "partial.json"
    partial.write_text('{"choice": {"bot": {}}}')
    with pytest.raises(SystemExit, match="no choice for clipreid, pdm"):
        bench.read_selection(partial)
    assert set(bench.read_selection(bench.SELECTION_JSON)["choice"]) == set(bench.METHODS)
