"""`dppp prompts sample / stats`: output, determinism across processes, and every bad-input case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dppp.cli import main
from dppp.prompts.taxonomy import SHIPPED_TAXONOMY

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"key", "pid", "view", "camid", "prompt", "negative_prompt", "attributes"}


def shipped():
    return yaml.safe_load(SHIPPED_TAXONOMY.read_text())


def experiment(tmp_path, taxonomy_data=None, **prompts):
    """An experiment YAML whose generate.prompts uses `taxonomy_data` (a dict written beside it)."""
    generate = {"seed": 0, "identities": 6, "prompts": dict(prompts)}
    if taxonomy_data is not None:
        path = tmp_path / "taxonomy.yaml"
        path.write_text(yaml.safe_dump(taxonomy_data, sort_keys=False))
        generate["prompts"]["taxonomy"] = str(path)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"generate": generate}, sort_keys=False))
    return config


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_prints_one_json_line_per_view(tmp_path, capsys):
    code, out, err = run(
        ["prompts", "sample", "configs/demo.yaml", "--identities", "5", "--seed", "3"], capsys
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["pid"] for r in records} == set(range(5))
    for record in records:
        assert REQUIRED <= set(record)
        assert record["key"] == f"p{record['pid']:06d}_v{record['view']:03d}"
        assert record["attributes"]["camera"] == str(record["camid"])
        assert record["prompt"].startswith("a full-body photo of ")
    per_pid = {}
    for record in records:
        per_pid.setdefault(record["pid"], []).append(record["view"])
    assert all(views == list(range(len(views))) for views in per_pid.values())
    # --seed is honoured: another seed, other people.
    code, other, _ = run(
        ["prompts", "sample", "configs/demo.yaml", "--identities", "5", "--seed", "4"], capsys
    )
    assert code == 0 and other != out


def test_two_processes_print_identical_lines(capsys):
    argv = ["prompts", "sample", "configs/demo.yaml", "--identities", "12", "--set", "generate.seed=5"]
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "dppp", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": "random"},
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > 24
    code, here, _ = run(argv, capsys)  # and this process agrees with both
    assert code == 0 and here == outputs[0]


def test_stats_prints_coverage_and_draws_a_png(tmp_path, capsys):
    plot = tmp_path / "coverage.png"
    code, out, err = run(
        ["prompts", "stats", "configs/demo.yaml", "--identities", "40", "--plot", str(plot)], capsys
    )
    assert code == 0, err
    assert "Attribute coverage: 40 identities" in out
    for name in ("skin_tone", "upper_color", "viewpoint", "illumination", "camera"):
        assert name in out
    assert "attribute values seen at least once" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["coverage.png"]  # no temp file left behind


def _mutate(path: str, value):
    data = shipped()
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return data


def _add_rule(dim: str, rule: dict):
    data = shipped()
    data["identity"][dim].setdefault("rules", []).insert(0, rule)
    return data


BAD_TAXONOMIES = {
    "unknown key": (_mutate("identity.gender.valuez", {"x": 1}), "identity.gender.valuez", "unknown key"),
    "wrong type": (
        _mutate("identity.gender.values", {"man": "heavy", "woman": 1}),
        "identity.gender.values.man",
        "number",
    ),
    "empty value list": (_mutate("identity.build.values", {}), "identity.build.values", "has no values"),
    "zero weight": (
        _mutate("identity.build.values", {"slim": 0, "average": 1}),
        "identity.build.values.slim",
        "positive",
    ),
    "negative weight": (
        _mutate("view.pose.values", {"walking": -1, "standing": 1}),
        "view.pose.values.walking",
        "positive",
    ),
    "rule on an unknown dimension": (
        _add_rule("hair_color", {"when": {"agegroup": "elderly"}, "weights": {"grey": 2}}),
        "identity.hair_color.rules[0].when.agegroup",
        "unknown dimension",
    ),
    "rule on an unknown value": (
        _add_rule("hair_color", {"when": {"age_group": "ancient"}, "weights": {"grey": 2}}),
        "identity.hair_color.rules[0].when.age_group",
        "'ancient' is not a value",
    ),
    "rule on a later dimension": (
        _add_rule("hair_color", {"when": {"upper_type": "coat"}, "weights": {"grey": 2}}),
        "identity.hair_color.rules[0].when.upper_type",
        "not sampled before",
    ),
    "rule weighting an unknown value": (
        _add_rule("hair_color", {"when": {"age_group": "elderly"}, "weights": {"purple": 2}}),
        "identity.hair_color.rules[0].weights.purple",
        "not a value",
    ),
    "rules forbidding everything": (
        _add_rule(
            "build",
            {"when": {"gender": "man"}, "weights": {"slim": 0, "average": 0, "athletic": 0, "heavy": 0}},
        ),
        "identity.build.rules",
        "no value with a positive weight",
    ),
    "template slot with no dimension": (
        _mutate("templates.positive.1.text", "{skin_colour} skin"),
        "templates.positive[1].text",
        "no dimension",
    ),
    "duplicate camid": (_mutate("cameras.1.camid", 1), "cameras[1].camid", "unique"),
    "empty positive template": (_mutate("templates.positive", []), "templates.positive", "at least one slot"),
    "colour without a palette entry": (
        _mutate("identity.upper_color.values", {"ultraviolet": 1}),
        "identity.upper_color.values.ultraviolet",
        "palette",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TAXONOMIES))
def test_bad_taxonomy_exits_2_naming_file_and_path(case, tmp_path, capsys):
    taxonomy, path, problem = BAD_TAXONOMIES[case]
    config = experiment(tmp_path, taxonomy)
    plot = tmp_path / "plot.png"
    for command in (["sample", str(config)], ["stats", str(config), "--plot", str(plot)]):
        code, out, err = run(["prompts", *command], capsys)
        assert code == 2
        assert out == ""  # nothing written
        assert str(tmp_path / "taxonomy.yaml") in err and f"'{path}'" in err and problem in err, err
        assert "Traceback" not in err and err.startswith("error: ")
    assert not plot.exists()


def test_too_many_identities_names_the_config_and_path(tmp_path, capsys):
    # 2 genders x 2 shirt colours = 4 appearances; the hidden bag colour does not make a fifth.
    data = {
        "palette": {"red": [200, 0, 0], "blue": [0, 0, 200]},
        "identity": {
            "gender": {"values": {"man": 1, "woman": 1}},
            "upper_color": {"values": {"red": 1, "blue": 1}},
            "bag": {"values": {"none": 1}},
            "bag_color": {"values": {"red": 1, "blue": 1}, "hidden_when": {"bag": "none"}},
        },
        "view": {"viewpoint": {"values": {"front": 1, "back": 1}}},
        "cameras": [
            {
                "camid": 0,
                "scene": "street",
                "indoor": False,
                "mount_height": "high",
                "angle": "downward",
                "distance": "far",
                "quality": "sharp HD",
            }
        ],
        "templates": {
            "positive": [
                {
                    "slot": "subject",
                    "appearance": True,
                    "text": "a photo of {a} {gender} in {a} {upper_color} shirt",
                }
            ]
        },
    }
    config = experiment(tmp_path, data)
    code, out, err = run(["prompts", "sample", str(config), "--identities", "4"], capsys)
    assert code == 0, err
    looks = {
        (r["attributes"]["gender"], r["attributes"]["upper_color"]) for r in map(json.loads, out.splitlines())
    }
    assert len(looks) == 4
    code, out, err = run(["prompts", "sample", str(config), "--identities", "5"], capsys)
    assert code == 2 and out == ""
    assert str(config) in err and "'generate.identities'" in err and "only 4 distinct appearances" in err


@pytest.mark.parametrize(
    ("prompts", "argv", "path"),
    [
        ({"viewz": 3}, [], "generate.prompts.viewz"),
        ({"views": {"distribution": "gaussian"}}, [], "generate.prompts.views.distribution"),
        ({"max_tokens": "many"}, [], "generate.prompts.max_tokens"),
        ({"views": {"min": 9, "max": 3}}, [], "generate.prompts.views"),
        ({}, ["--set", "generate.prompts.views.mean=-2"], "generate.prompts.views.mean"),
    ],
)
def test_bad_prompts_config_exits_2(prompts, argv, path, tmp_path, capsys):
    config = experiment(tmp_path, None, **prompts)
    code, out, err = run(["prompts", "sample", str(config), *argv], capsys)
    assert code == 2 and out == ""
    assert str(config) in err and path in err and "Traceback" not in err


def test_missing_taxonomy_file_and_bad_yaml(tmp_path, capsys):
    config = experiment(tmp_path, None, taxonomy=str(tmp_path / "nope.yaml"))
    code, out, err = run(["prompts", "sample", str(config)], capsys)
    assert code == 2 and out == "" and "nope.yaml" in err and "file not found" in err
    (tmp_path / "broken.yaml").write_text("identity: [\n")
    config = experiment(tmp_path, None, taxonomy=str(tmp_path / "broken.yaml"))
    code, out, err = run(["prompts", "stats", str(config)], capsys)
    assert code == 2 and out == "" and "broken.yaml" in err and "invalid YAML" in err


def test_appearance_over_the_budget_exits_2(tmp_path, capsys):
    config = experiment(tmp_path, None, max_tokens=30)
    code, out, err = run(["prompts", "sample", str(config)], capsys)
    assert code == 2 and out == ""
    assert str(SHIPPED_TAXONOMY) in err and "'templates.positive'" in err and "max_tokens = 30" in err


def test_plot_path_problems_are_user_errors(tmp_path, capsys):
    code, out, err = run(
        ["prompts", "stats", "configs/demo.yaml", "--plot", str(tmp_path / "no" / "p.png")], capsys
    )
    assert code == 2 and "--plot: folder" in err and "does not exist" in err and out == ""
    code, out, err = run(
        ["prompts", "stats", "configs/demo.yaml", "--plot", str(tmp_path / "p.jpg")], capsys
    )
    assert code == 2 and "--plot: writes a PNG" in err and ".png" in err
