"""The prompt engine: determinism, frequencies, rules, distinct identities, templates and the token budget."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import yaml

from dppp.foundation.errors import ConfigError
from dppp.prompts.config import PromptsConfig, ViewsConfig
from dppp.prompts.dedup import count_distinct, distinct_lower_bound, signatures
from dppp.prompts.engine import PromptEngine
from dppp.prompts.taxonomy import SHIPPED_TAXONOMY, load_taxonomy
from dppp.prompts.taxonomy_schema import CAMERA_COLUMNS
from dppp.prompts.templates import article, is_plural
from dppp.prompts.tokens import EstimatedTokenCounter, TokenizerCounter

# Upper 0.1% points of the chi-square distribution (df: value), from standard tables. A fixed seed makes
# each test deterministic; alpha = 0.001 means a correct sampler fails it with probability 1/1000 per seed.
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 7: 24.322, 9: 27.877}


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy(None)


@pytest.fixture(scope="module")
def engine(taxonomy):
    return PromptEngine(taxonomy, PromptsConfig(), seed=7, identities=3000)


def chi_square(observed: dict[str, int], weights: dict[str, float]) -> tuple[float, int]:
    total = sum(observed.values())
    norm = sum(weights.values())
    stat = 0.0
    for value, weight in weights.items():
        expected = total * weight / norm
        stat += (observed.get(value, 0) - expected) ** 2 / expected
    return stat, len(weights) - 1


def write_taxonomy(tmp_path, data, name="taxonomy.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def shipped():
    return yaml.safe_load(SHIPPED_TAXONOMY.read_text())


SMALL = {
    "palette": {"red": [200, 0, 0], "blue": [0, 0, 200]},
    "identity": {
        "gender": {"values": {"man": 1, "woman": 1}},
        "upper_color": {"values": {"red": 1, "blue": 1}},
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
        },
    ],
    "templates": {
        "lists": {"wearing": "wearing"},
        "positive": [
            {"slot": "subject", "appearance": True, "text": "a photo of {a} {gender}"},
            {"slot": "upper", "appearance": True, "list": "wearing", "text": "{a} {upper_color} shirt"},
            {"slot": "viewpoint", "priority": 1, "text": "seen from the {viewpoint}"},
        ],
    },
}


# -- determinism -----------------------------------------------------------------------------------


def test_same_answer_whatever_the_order_or_engine(taxonomy, engine):
    forward = [v for pid in range(40) for v in engine.views(pid)]
    fresh = PromptEngine(taxonomy, PromptsConfig(), seed=7)  # no precomputed table: grows on demand
    backward = {}
    for pid in reversed(range(40)):
        for view in reversed(range(fresh.num_views(pid))):
            backward[(pid, view)] = fresh.view(pid, view)
    assert forward == [backward[(v.pid, v.view)] for v in forward]
    assert list(engine.iter_views(range(40))) == forward
    assert fresh.identity(39) == engine.identity(39)


def test_identity_does_not_depend_on_the_range_asked(taxonomy):
    small = PromptEngine(taxonomy, PromptsConfig(), seed=3, identities=10)
    large = PromptEngine(taxonomy, PromptsConfig(), seed=3, identities=5000)
    assert [small.identity(p) for p in range(10)] == [large.identity(p) for p in range(10)]
    lazy = PromptEngine(taxonomy, PromptsConfig(), seed=3)
    assert lazy.identity(4321) == large.identity(4321)


def test_seed_changes_everything_and_seeds_fit_63_bits(taxonomy, engine):
    other = PromptEngine(taxonomy, PromptsConfig(), seed=8, identities=50)
    assert [engine.identity(p).attributes for p in range(50)] != [
        other.identity(p).attributes for p in range(50)
    ]
    views = list(engine.iter_views(range(200)))
    seeds = [v.seed for v in views] + [v.identity_seed for v in views]
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
    assert len({v.seed for v in views}) == len(views)


def test_negative_seed_is_a_config_error(taxonomy):
    with pytest.raises(ConfigError, match="non-negative") as info:
        PromptEngine(taxonomy, PromptsConfig(), seed=-1)
    assert info.value.path == "seed"  # the engine's argument: the experiment config is not prompts' to know


# -- the contract other components rely on ---------------------------------------------------------


def test_view_attributes_hold_every_dimension_and_the_camera_profile(taxonomy, engine):
    cameras = {c.camid: c for c in taxonomy.model.cameras}
    expected = [*taxonomy.identity_names, *CAMERA_COLUMNS, *taxonomy.view_names]
    for view in engine.views(5):
        assert list(view.attributes) == expected
        assert all(isinstance(v, str) for v in view.attributes.values())
        camera = cameras[view.camid]
        assert view.attributes["camera"] == str(view.camid)
        assert view.attributes["scene"] == camera.scene
        assert view.attributes["indoor"] == ("yes" if camera.indoor else "no")
        assert view.attributes["camera_height"] == camera.mount_height
        assert view.attributes["image_quality"] == camera.quality
        assert view.pid == 5
        identity = engine.identity(5)
        assert {k: view.attributes[k] for k in identity.attributes} == identity.attributes
        assert view.identity_seed == identity.seed


def test_every_colour_value_has_a_palette_rgb(taxonomy):
    for name in (*taxonomy.identity_names, *taxonomy.view_names):
        if name.endswith("_color"):
            for value in taxonomy.values(name):
                rgb = taxonomy.rgb(value)
                assert len(rgb) == 3 and all(0 <= c <= 255 for c in rgb)
    with pytest.raises(KeyError, match="palette"):
        taxonomy.rgb("ultraviolet")


def test_taxonomy_hash_is_stable_and_follows_content(tmp_path, taxonomy):
    assert load_taxonomy(None).hash == taxonomy.hash
    data = shipped()
    assert load_taxonomy(write_taxonomy(tmp_path, data)).hash == taxonomy.hash  # same content, other file
    data["identity"]["gender"]["values"]["man"] = 2
    assert load_taxonomy(write_taxonomy(tmp_path, data, "other.yaml")).hash != taxonomy.hash


# -- frequencies and rules -------------------------------------------------------------------------


def test_identity_frequencies_match_the_weights(taxonomy):
    engine = PromptEngine(taxonomy, PromptsConfig(), seed=11, identities=20000)
    attrs = [engine.identity(p).attributes for p in range(20000)]
    for name in ("gender", "build", "height", "skin_tone"):  # dimensions without rules
        observed = Counter(a[name] for a in attrs)
        stat, df = chi_square(observed, taxonomy.model.identity[name].values)
        assert stat < CHI2_999[df], (name, stat, observed)
    # A conditional distribution: hair length given gender is the base weights times the rule's factors.
    hair = taxonomy.model.identity["hair_length"]
    factors = hair.rules[0].weights  # when gender: man
    weights = {v: w * factors.get(v, 1) for v, w in hair.values.items()}
    observed = Counter(a["hair_length"] for a in attrs if a["gender"] == "man")
    stat, df = chi_square(observed, weights)
    assert stat < CHI2_999[df], (stat, observed)


def test_view_and_camera_frequencies_match_the_weights(taxonomy, engine):
    views = list(engine.iter_views(range(2000)))
    assert len(views) > 15000
    observed = Counter(v.attributes["viewpoint"] for v in views)
    stat, df = chi_square(observed, taxonomy.model.view["viewpoint"].values)
    assert stat < CHI2_999[df], stat
    observed = Counter(str(v.camid) for v in views)
    stat, df = chi_square(observed, {str(c.camid): c.weight for c in taxonomy.model.cameras})
    assert stat < CHI2_999[df], stat


def test_rules_on_the_camera_profile_reweight_view_dimensions(taxonomy, engine):
    # Illumination under indoor cameras: the base weights times the `indoor: yes` rule's factors.
    illumination = taxonomy.model.view["illumination"]
    rule = next(r for r in illumination.rules if r.when == {"indoor": True})
    weights = {v: w * rule.weights.get(v, 1) for v, w in illumination.values.items()}
    weights = {v: w for v, w in weights.items() if w > 0}
    views = [v for v in engine.iter_views(range(2000)) if v.attributes["indoor"] == "yes"]
    observed = Counter(v.attributes["illumination"] for v in views)
    assert set(observed) <= set(weights)
    stat, df = chi_square(observed, weights)
    assert stat < CHI2_999[df], (stat, observed)


def test_when_rules_hold(engine):
    indoor_light = {"fluorescent indoor lighting", "warm indoor lighting", "dim indoor lighting", "backlit"}
    outdoor_only = {"fluorescent indoor lighting", "warm indoor lighting", "dim indoor lighting"}
    seen_indoor = seen_outdoor = 0
    for view in engine.iter_views(range(1500)):
        a = view.attributes
        if a["indoor"] == "yes":
            seen_indoor += 1
            assert a["illumination"] in indoor_light and a["weather"] == "none", a
        else:
            seen_outdoor += 1
            assert a["illumination"] not in outdoor_only and a["weather"] != "none", a
    assert seen_indoor > 1000 and seen_outdoor > 1000
    for pid in range(3000):
        a = engine.identity(pid).attributes
        if a["hair_length"] in ("bald", "very short"):
            assert a["hair_style"] not in ("ponytail", "bun", "braided"), a
        if a["hair_length"] == "bald":
            assert a["hair_style"] == "straight"
        if a["age_group"] == "teenage":
            assert a["hair_color"] not in ("grey", "white")
        if a["upper_type"] == "dress":
            assert a["lower_type"] == "leggings"


def test_views_per_identity_follow_the_distribution(taxonomy):
    def counts(views):
        config = PromptsConfig(views=views)
        engine = PromptEngine(taxonomy, config, seed=1, identities=4000)
        return np.array([engine.num_views(p) for p in range(4000)])

    assert set(counts(ViewsConfig(distribution="fixed", mean=7, min=2, max=30))) == {7}
    uniform = counts(ViewsConfig(distribution="uniform", min=3, max=6))
    assert set(uniform) == {3, 4, 5, 6}
    poisson = counts(ViewsConfig(distribution="poisson", mean=19.65, min=2, max=60))
    # The truncation at 2 and 60 moves the mean by far less than the 4-sigma tolerance of 4 * 0.07.
    assert abs(poisson.mean() - 19.65) < 4 * math.sqrt(19.65 / 4000)
    assert poisson.min() >= 2 and poisson.max() <= 60


# -- distinct identities ---------------------------------------------------------------------------


def test_identities_have_distinct_appearances(taxonomy, engine):
    codes = engine._codes[:3000]
    sigs = signatures(taxonomy, codes)
    assert len(set(sigs)) == 3000


def test_hidden_values_do_not_make_a_person_distinct(taxonomy):
    engine = PromptEngine(taxonomy, PromptsConfig(), seed=0, identities=1)
    codes = engine._codes[:1].copy()
    bag = taxonomy.column_index["bag"]
    bag_color = taxonomy.column_index["bag_color"]
    codes[0, bag] = taxonomy.columns[bag].index["none"]
    other = codes.copy()
    other[0, bag_color] = (codes[0, bag_color] + 1) % len(taxonomy.columns[bag_color].values)
    assert signatures(taxonomy, codes) == signatures(taxonomy, other)
    codes[0, bag] = other[0, bag] = taxonomy.columns[bag].index["backpack"]
    assert signatures(taxonomy, codes) != signatures(taxonomy, other)


def test_a_small_taxonomy_is_used_up_exactly(tmp_path):
    # 2 genders x 2 colours = 4 appearances: four identities must take all four, a fifth is impossible.
    taxonomy = load_taxonomy(write_taxonomy(tmp_path, SMALL))
    engine = PromptEngine(taxonomy, PromptsConfig(), seed=5, identities=4)
    looks = {tuple(engine.identity(p).attributes.values()) for p in range(4)}
    assert len(looks) == 4
    with pytest.raises(ConfigError, match="allows only 4 distinct appearances") as info:
        PromptEngine(taxonomy, PromptsConfig(), seed=5, identities=5)
    assert info.value.path == "identities"


def test_rules_and_hidden_values_shape_the_count_of_appearances(tmp_path):
    # Men are all bald; a bald head hides the hair colour. Appearances: bald man, bald woman, and a
    # long-haired woman in 3 colours = 5, though 2 x 2 x 3 = 12 combinations of values exist.
    data = {
        "palette": {"black": [0, 0, 0], "brown": [100, 60, 20], "red": [200, 0, 0]},
        "identity": {
            "gender": {"values": {"man": 1, "woman": 1}},
            "hair_length": {
                "values": {"bald": 1, "long": 1},
                "rules": [{"when": {"gender": "man"}, "weights": {"long": 0}}],
            },
            "hair_color": {
                "values": {"black": 1, "brown": 1, "red": 1},
                "hidden_when": {"hair_length": "bald"},
            },
        },
        "view": {"viewpoint": {"values": {"front": 1}}},
        "cameras": SMALL["cameras"],
        "templates": {
            "positive": [
                {"slot": "subject", "appearance": True, "text": "{a} {gender}"},
                {"slot": "hair", "appearance": True, "when": {"hair_length": "bald"}, "text": "a bald head"},
                {"slot": "hair", "appearance": True, "text": "{hair_length} {hair_color} hair"},
            ]
        },
    }
    taxonomy = load_taxonomy(write_taxonomy(tmp_path, data))
    assert distinct_lower_bound(taxonomy) == 2 and count_distinct(taxonomy, 100) == 5
    engine = PromptEngine(taxonomy, PromptsConfig(), seed=0, identities=5)
    prompts = {engine.views(pid)[0].prompt for pid in range(5)}
    assert prompts == {
        "a man, a bald head",
        "a woman, a bald head",
        "a woman, long black hair",
        "a woman, long brown hair",
        "a woman, long red hair",
    }
    with pytest.raises(ConfigError, match="only 5 distinct"):
        PromptEngine(taxonomy, PromptsConfig(), seed=0, identities=6)


# -- templates and the token budget ----------------------------------------------------------------


def test_articles_plurals_and_lists():
    assert [article(w) for w in ("elderly", "orange", "university", "red", "hour")] == [
        "an",
        "an",
        "a",
        "a",
        "an",
    ]
    assert is_plural("jeans") and is_plural("running shoes") and is_plural("glasses")
    assert not is_plural("dress") and not is_plural("t-shirt") and not is_plural("phone in hand")


def test_prompt_reads_naturally(engine):
    for view in engine.iter_views(range(300)):
        a, prompt = view.attributes, view.prompt
        assert "  " not in prompt and " ," not in prompt and not prompt.endswith(",")
        assert " a a" not in prompt and " an a " not in prompt
        assert "none" not in prompt.split(", ")  # empty slots are left out, not written as "none"
        assert f"{a['upper_color']} " in prompt
        if a["lower_type"] in ("jeans", "trousers", "shorts"):
            assert f"{a['lower_color']} {a['lower_type']}" in prompt
            assert f"a {a['lower_color']} {a['lower_type']}" not in prompt
        if a["headwear"] == "none":
            assert a["headwear_color"] + " " + "hat" not in prompt
        if a["age_group"] in ("elderly",):
            assert prompt.startswith("a full-body photo of an elderly ")
        assert " wearing " in prompt and " and " in prompt.split(" wearing ", 1)[1]


def test_truncation_keeps_the_appearance_and_records_drops(taxonomy):
    engine = PromptEngine(taxonomy, PromptsConfig(max_tokens=70), seed=2, identities=300)
    counter = EstimatedTokenCounter()
    full = PromptEngine(taxonomy, PromptsConfig(max_tokens=400), seed=2, identities=300)
    dropped_any = 0
    for short, long in zip(engine.iter_views(range(300)), full.iter_views(range(300)), strict=True):
        assert long.dropped_slots == ()
        assert counter.count(short.prompt) + 2 <= 70
        appearance = long.prompt.split(", " + short.attributes["pose"])[0]
        assert short.prompt.startswith(appearance)  # the whole appearance, word for word
        if short.dropped_slots:
            dropped_any += 1
            # Lowest priority first: the camera distance (1) goes before the viewpoint (9).
            assert short.dropped_slots[0] == "camera_distance"
            assert "viewpoint" not in short.dropped_slots or len(short.dropped_slots) >= 7
    assert dropped_any > 100


def test_dropping_a_list_item_also_saves_its_lead(tmp_path):
    # Estimated tokens: subject 5, "wearing" 2 + "a red shirt" 3, "seen from the front" 4, 2 separators,
    # start/end 2 = 18. Dropping the shirt saves 6 (with its lead), enough for a budget of 13: the
    # viewpoint, though a drop later in line, must stay.
    taxonomy = load_taxonomy(
        write_taxonomy(
            tmp_path,
            {
                **SMALL,
                "templates": {
                    "lists": {"wearing": "wearing"},
                    "positive": [
                        {"slot": "subject", "appearance": True, "text": "a photo of {a} {gender}"},
                        {
                            "slot": "upper",
                            "priority": 1,
                            "list": "wearing",
                            "text": "{a} {upper_color} shirt",
                        },
                        {"slot": "viewpoint", "priority": 2, "text": "seen from the {viewpoint}"},
                    ],
                },
            },
        )
    )
    roomy = PromptEngine(taxonomy, PromptsConfig(max_tokens=18), seed=0, identities=4)
    tight = PromptEngine(taxonomy, PromptsConfig(max_tokens=13), seed=0, identities=4)
    for pid in range(4):
        full, short = roomy.views(pid)[0], tight.views(pid)[0]
        a = full.attributes
        assert (
            full.prompt
            == f"a photo of a {a['gender']}, wearing a {a['upper_color']} shirt, seen from the {a['viewpoint']}"
        )
        assert full.dropped_slots == ()
        assert short.prompt == f"a photo of a {a['gender']}, seen from the {a['viewpoint']}"
        assert short.dropped_slots == ("upper",)
    bare = PromptEngine(taxonomy, PromptsConfig(max_tokens=8), seed=0, identities=4).views(0)[0]
    assert bare.prompt == f"a photo of a {bare.attributes['gender']}"
    assert bare.dropped_slots == ("upper", "viewpoint")


def test_a_real_tokenizer_counts_exactly():
    from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer

    tokenizer = build_tiny_clip_tokenizer()
    taxonomy = load_taxonomy(None)
    # The tiny tokenizer splits words into many pieces, so give it a budget it can meet.
    engine = PromptEngine(
        taxonomy, PromptsConfig(max_tokens=160), seed=4, token_counter=TokenizerCounter(tokenizer)
    )
    lengths = []
    for view in engine.iter_views(range(40)):
        length = len(tokenizer(view.prompt)["input_ids"])
        lengths.append(length)
        assert length <= 160
    assert max(lengths) > 140  # the budget was actually binding


def test_appearance_longer_than_the_budget_is_a_config_error(taxonomy):
    with pytest.raises(ConfigError, match="appearance") as info:
        PromptEngine(taxonomy, PromptsConfig(max_tokens=30), seed=0, identities=10)
    assert info.value.path == "templates.positive" and info.value.file == str(SHIPPED_TAXONOMY)
