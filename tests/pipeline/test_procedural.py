"""The procedural renderer: deterministic, faithful to the attributes, with real view-level changes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from dppp.foundation.errors import ConfigError
from dppp.pipeline.renderers.procedural.canvas import Part
from dppp.pipeline.renderers.procedural.colours import hash_colour, load_palette
from dppp.pipeline.renderers.procedural.renderer import ProceduralRenderer, ProceduralRendererConfig
from dppp.pipeline.renderers.registry import load_renderer
from dppp.prompts.spec import ViewSpec

ROOT = Path(__file__).resolve().parents[2]
PALETTE = load_palette()
UPPER_COLOURS = [
    "black",
    "white",
    "grey",
    "dark grey",
    "light grey",
    "red",
    "dark red",
    "pink",
    "orange",
    "yellow",
    "beige",
    "brown",
    "khaki",
    "olive",
    "green",
    "dark green",
    "teal",
    "light blue",
    "blue",
    "navy",
    "purple",
    "lavender",
]

BASE = {
    "gender": "man",
    "age_group": "young adult",
    "build": "average",
    "height": "average height",
    "skin_tone": "medium",
    "hair_length": "short",
    "hair_style": "straight",
    "hair_color": "black",
    "upper_type": "t-shirt",
    "upper_color": "green",
    "upper_pattern": "plain",
    "lower_type": "jeans",
    "lower_color": "denim",
    "footwear": "sneakers",
    "footwear_color": "white",
    "headwear": "none",
    "headwear_color": "black",
    "bag": "none",
    "bag_color": "black",
    "accessory": "none",
    "viewpoint": "front",
    "pose": "walking",
    "illumination": "overcast daylight",
    "weather": "clear",
    "camera": "2",
    "scene": "university campus path",
    "indoor": "no",
    "camera_height": "medium",
    "camera_angle": "slight downward",
    "camera_distance": "medium",
    "image_quality": "sharp HD",
}
# Neutral light, no weather, no camera degradation: the figure's own colours.
NEUTRAL = ProceduralRendererConfig(lighting=0.0, weather=False, degradation=False)


def view(seed: int = 11, identity_seed: int = 5, pid: int = 3, **attrs: str) -> ViewSpec:
    attributes = {**BASE, **attrs}
    return ViewSpec(
        pid=pid,
        view=0,
        camid=int(attributes["camera"]),
        seed=seed,
        identity_seed=identity_seed,
        attributes=attributes,
        prompt="a person",
        negative_prompt="",
    )


def pixels(renderer: ProceduralRenderer, spec: ViewSpec) -> np.ndarray:
    return np.asarray(renderer.render([spec])[0].image, dtype=np.float32)


def region_mean(renderer: ProceduralRenderer, spec: ViewSpec, part: Part) -> np.ndarray:
    """Mean colour of the pixels a part owns, one pixel in from its edges (outlines are drawn darker)."""
    drawing = renderer.draw(spec)
    mask = drawing.labels == part
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    assert inner.sum() > 50, f"too few {part.name} pixels to measure"
    return np.asarray(drawing.image, dtype=np.float32)[inner].mean(axis=0)


def nearest(rgb: np.ndarray, names: list[str]) -> str:
    return min(names, key=lambda n: float(np.abs(np.asarray(PALETTE[n], np.float32) - rgb).sum()))


VARIED = [  # views that exercise every random path: noise, rain, snow, motion blur, compression
    view(),
    view(seed=1, viewpoint="back", weather="light rain", image_quality="grainy surveillance", bag="backpack"),
    view(seed=2, viewpoint="left side", weather="snow", image_quality="motion-blurred CCTV", pose="jogging"),
    view(
        seed=3,
        illumination="night under streetlights",
        image_quality="low-resolution CCTV",
        camera_distance="far",
        upper_pattern="striped",
        weather="fog",
    ),
]


def digest(renderer: ProceduralRenderer, views: list[ViewSpec]) -> list[str]:
    return [hashlib.sha256(r.image.tobytes()).hexdigest() for r in renderer.render(views)]


# -- determinism ----------------------------------------------------------------------------------------
def test_same_spec_gives_identical_pixels_across_renderers_and_batches():
    first = digest(ProceduralRenderer(), VARIED)
    assert digest(ProceduralRenderer(), VARIED) == first
    # Batch composition does not matter: each view alone gives the same image as in the batch.
    assert [digest(ProceduralRenderer(), [v])[0] for v in reversed(VARIED)] == first[::-1]
    assert len(set(first)) == len(first)


def test_second_process_renders_identical_pixels():
    code = (
        "import json, sys, hashlib\n"
        "sys.path.insert(0, '.')\n"
        "from tests.pipeline.test_procedural import VARIED, digest\n"
        "from dppp.pipeline.renderers.procedural.renderer import ProceduralRenderer\n"
        "print(json.dumps(digest(ProceduralRenderer(), VARIED)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == digest(ProceduralRenderer(), VARIED)


# -- the interface --------------------------------------------------------------------------------------
def test_render_returns_rgb_images_at_the_native_size_in_order():
    renderer = load_renderer(ProceduralRendererConfig(height=128, width=64))
    assert isinstance(renderer, ProceduralRenderer)
    out = renderer.render(VARIED)
    assert len(out) == len(VARIED)
    for rendered in out:
        assert rendered.image.mode == "RGB" and rendered.image.size == (64, 128)
        assert rendered.attempts == 1
    # Order matches the input: rendering views one by one gives the same images.
    assert out[1].image.tobytes() == renderer.render([VARIED[1]])[0].image.tobytes()


def test_describe_is_json_and_names_the_renderer():
    desc = ProceduralRenderer(ProceduralRendererConfig(lighting=0.5)).describe()
    assert desc["name"] == "procedural" and isinstance(desc["version"], int)
    assert desc["size"] == [256, 128] and desc["lighting"] == 0.5
    assert set(desc["versions"]) == {"numpy", "pillow"}
    json.dumps(desc)


def test_config_is_strict_and_validated():
    with pytest.raises(ValidationError):
        ProceduralRendererConfig(lightning=1.0)
    with pytest.raises(ValidationError):
        ProceduralRendererConfig(lighting=-1)
    with pytest.raises(ValidationError):
        ProceduralRendererConfig(height=8)


# -- faithfulness -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("colour", UPPER_COLOURS)
def test_upper_garment_has_the_palette_colour_under_neutral_light(colour):
    renderer = ProceduralRenderer(NEUTRAL)
    for identity_seed in (1, 2, 3):
        mean = region_mean(renderer, view(identity_seed=identity_seed, upper_color=colour), Part.UPPER)
        target = np.asarray(PALETTE[colour], np.float32)
        assert np.abs(mean - target).max() < 32, (colour, identity_seed, mean, target)
        assert nearest(mean, UPPER_COLOURS) == colour, (colour, identity_seed, mean)


@pytest.mark.parametrize(
    "part,attr,colour",
    [
        (Part.LOWER, "lower_color", "khaki"),
        (Part.LOWER, "lower_color", "navy"),
        (Part.HAIR, "hair_color", "blond"),
        (Part.HEADWEAR, "headwear_color", "red"),
        (Part.SHOE, "footwear_color", "brown"),
    ],
)
def test_other_garments_have_their_palette_colour(part, attr, colour):
    extra = {"headwear": "beanie"} if part == Part.HEADWEAR else {}
    extra |= {"footwear": "boots", "camera_distance": "near"} if part == Part.SHOE else {}
    extra |= {"hair_length": "long"} if part == Part.HAIR else {}
    mean = region_mean(ProceduralRenderer(NEUTRAL), view(**{attr: colour}, **extra), part)
    assert np.abs(mean - np.asarray(PALETTE[colour], np.float32)).max() < 35, (mean, PALETTE[colour])


def count_near(image: np.ndarray, rgb: tuple[int, int, int], tol: float = 45.0) -> int:
    return int((np.abs(image - np.asarray(rgb, np.float32)).sum(axis=2) < tol).sum())


def test_backpack_shows_from_the_back_and_hides_from_the_front():
    renderer = ProceduralRenderer(NEUTRAL)
    bag = {"bag": "backpack", "bag_color": "red", "upper_color": "navy", "scene": "parking lot"}
    back = pixels(renderer, view(viewpoint="back", **bag))
    front = pixels(renderer, view(viewpoint="front", **bag))
    no_bag = pixels(renderer, view(viewpoint="back", **{**bag, "bag": "none"}))
    red = PALETTE["red"]
    assert count_near(back, red) > 1200  # a backpack covers much of the back
    assert count_near(front, red) < 0.25 * count_near(back, red)  # only the straps are seen from the front
    assert count_near(no_bag, red) < 30
    # Side view: the pack sticks out behind the person (who faces the image left in a left-side view).
    side = renderer.draw(view(viewpoint="left side", **bag))
    cols = np.nonzero((side.labels == Part.BAG).any(axis=0))[0]
    body = np.nonzero((side.labels == Part.UPPER).any(axis=0))[0]
    assert cols.size and cols.max() > body.max()


def test_side_view_is_narrower_than_front_view():
    renderer = ProceduralRenderer(NEUTRAL)

    def chest_width(viewpoint: str) -> int:
        labels = renderer.draw(view(viewpoint=viewpoint, pose="standing")).labels
        rows = np.nonzero((labels == Part.UPPER).any(axis=1))[0]
        chest = labels[rows.min() + (rows.max() - rows.min()) // 3]
        return int((chest == Part.UPPER).sum())

    assert chest_width("left side") < 0.75 * chest_width("front")
    assert chest_width("front-left three-quarter") < chest_width("front")


def test_face_accessories_are_seen_from_the_front_only():
    renderer = ProceduralRenderer(NEUTRAL)
    front = renderer.draw(view(accessory="sunglasses", viewpoint="front")).labels
    back = renderer.draw(view(accessory="sunglasses", viewpoint="back")).labels
    assert (front == Part.ACCESSORY).sum() > 10 and (back == Part.ACCESSORY).sum() == 0


def test_other_identity_with_same_attributes_is_similar_but_different():
    renderer = ProceduralRenderer(NEUTRAL)
    a = pixels(renderer, view(identity_seed=100))
    b = pixels(renderer, view(identity_seed=101))
    other_colour = pixels(renderer, view(identity_seed=100, upper_color="red", lower_color="khaki"))
    same_again = pixels(renderer, view(identity_seed=100))
    assert np.array_equal(a, same_again)
    diff_identity = float(np.abs(a - b).mean())
    assert diff_identity > 1.0  # shades, proportions and framing differ
    assert diff_identity < float(np.abs(a - other_colour).mean())  # less than a change of clothes


def test_views_of_an_identity_share_its_exact_shade():
    renderer = ProceduralRenderer(NEUTRAL)
    means = [
        region_mean(renderer, view(seed=s, identity_seed=7, viewpoint=vp), Part.UPPER)
        for s, vp in [(1, "front"), (2, "back"), (3, "front-right three-quarter")]
    ]
    other = region_mean(renderer, view(seed=1, identity_seed=8), Part.UPPER)
    spread = max(float(np.abs(m - means[0]).max()) for m in means)
    assert spread < 6.0  # same person, same shirt, whatever the view
    assert float(np.abs(other - means[0]).max()) > spread  # another person's green is another green


def test_unknown_values_still_render_with_hashed_colours():
    renderer = ProceduralRenderer(NEUTRAL)
    spec = view(
        upper_color="chartreuse haze",
        upper_type="poncho",
        upper_pattern="zigzag",
        viewpoint="upside",
        pose="dancing",
        scene="moon base",
        lower_type="kilt",
        headwear="crown",
        bag="satchel",
        footwear="skates",
        skin_tone="blue",
        illumination="disco",
        weather="meteor shower",
        image_quality="8 mm film",
    )
    image = renderer.render([spec])[0].image
    assert image.size == (128, 256)
    plain = view(upper_color="chartreuse haze", upper_type="poncho")
    mean = region_mean(renderer, plain, Part.UPPER)
    assert np.abs(mean - np.asarray(hash_colour("chartreuse haze"), np.float32)).max() < 32
    full = ProceduralRenderer().render([spec])[0].image  # every style stage on, with unknown values
    assert full.size == (128, 256)


def test_palette_comes_from_the_configured_taxonomy(tmp_path):
    data = yaml.safe_load((ROOT / "prompts" / "taxonomy.yaml").read_text())
    data["palette"]["green"] = [200, 0, 200]
    taxonomy = tmp_path / "mine.yaml"
    taxonomy.write_text(yaml.safe_dump(data, sort_keys=False))  # dimension order matters
    renderer = ProceduralRenderer(
        ProceduralRendererConfig(lighting=0.0, weather=False, degradation=False, taxonomy=taxonomy)
    )
    mean = region_mean(renderer, view(upper_color="green"), Part.UPPER)
    assert np.abs(mean - np.array([200, 0, 200], np.float32)).max() < 32


def test_a_missing_taxonomy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ProceduralRenderer(ProceduralRendererConfig(taxonomy=tmp_path / "nope.yaml"))


# -- view-level factors -----------------------------------------------------------------------------------
STYLE_ONLY = ProceduralRendererConfig(weather=False, degradation=False)


def test_illumination_changes_image_statistics_as_expected():
    renderer = ProceduralRenderer(STYLE_ONLY)

    def stats(illumination: str) -> tuple[float, float, float]:
        img = pixels(renderer, view(illumination=illumination, upper_color="white"))
        return float(img.mean()), float(img[..., 0].mean() / img[..., 2].mean()), float(img.std())

    sun, overcast, night = (
        stats("bright midday sun"),
        stats("overcast daylight"),
        stats("night under streetlights"),
    )
    evening, fluorescent = stats("warm evening light"), stats("fluorescent indoor lighting")
    harsh = stats("harsh shadows")
    assert sun[0] > overcast[0] > night[0] + 25  # brightness
    assert evening[1] > fluorescent[1] * 1.25  # colour temperature: warm light is red-heavy
    assert night[1] > overcast[1] * 1.2  # sodium streetlights are orange
    assert harsh[2] > overcast[2] * 1.15  # contrast


def test_backlight_darkens_the_subject_against_the_scene():
    renderer = ProceduralRenderer(STYLE_ONLY)

    def subject_vs_scene(illumination: str) -> float:
        drawing = renderer.draw(view(illumination=illumination))
        img = np.asarray(drawing.image, np.float32).mean(axis=2)
        return float(img[drawing.labels > 0].mean() / img[drawing.labels == 0].mean())

    assert subject_vs_scene("backlit") < 0.8 * subject_vs_scene("overcast daylight")


def test_harsh_light_shades_one_side_of_the_body():
    renderer = ProceduralRenderer(STYLE_ONLY)
    drawing = renderer.draw(view(illumination="harsh shadows", upper_color="white", pose="standing"))
    img = np.asarray(drawing.image, np.float32).mean(axis=2)
    mask = drawing.labels == Part.UPPER
    cols = np.nonzero(mask.any(axis=0))[0]
    mid = (cols.min() + cols.max()) // 2
    left = img[:, :mid][mask[:, :mid]].mean()
    right = img[:, mid:][mask[:, mid:]].mean()
    assert abs(left - right) > 25


def test_cameras_differ_in_scene_and_colour_cast():
    renderer = ProceduralRenderer(STYLE_ONLY)
    subway = view(camera="4", scene="subway station platform", camera_angle="slight downward")
    park = view(camera="5", scene="park walkway with trees", camera_angle="eye level")
    a, b = renderer.draw(subway), renderer.draw(park)
    bg_a = np.asarray(a.image, np.float32)[a.labels == 0].mean(axis=0)
    bg_b = np.asarray(b.image, np.float32)[b.labels == 0].mean(axis=0)
    assert np.abs(bg_a - bg_b).max() > 20
    # Same scene on another camera number: the camera's own colour cast changes the person's colours.
    fig_a = region_mean(renderer, subway, Part.UPPER)
    fig_c = region_mean(
        renderer, replace(subway, attributes={**subway.attributes, "camera": "9"}), Part.UPPER
    )
    assert np.abs(fig_a - fig_c).max() > 4


def test_camera_quality_degrades_fine_detail():
    renderer = ProceduralRenderer(ProceduralRendererConfig(lighting=0.0, weather=False))

    def detail(**attrs: str) -> float:
        """Edge strength across the torso band: rows averaged first, so sensor noise cancels out and
        what remains is how crisp the silhouette and garment edges are."""
        spec = view(**attrs)
        labels = renderer.draw(spec).labels
        rows = np.nonzero((labels == Part.UPPER).any(axis=1))[0]
        band = pixels(renderer, spec).mean(axis=2)[rows.min() : rows.max()]
        return float(np.abs(np.diff(band.mean(axis=0))).sum())

    sharp = detail(image_quality="sharp HD", camera_distance="near")
    cctv = detail(image_quality="low-resolution CCTV", camera_distance="far")
    motion = detail(image_quality="motion-blurred CCTV")
    assert cctv < 0.8 * sharp and motion < 0.8 * sharp


def test_camera_distance_height_and_person_height_change_the_figure_size():
    renderer = ProceduralRenderer(NEUTRAL)

    def figure_rows(**attrs: str) -> int:
        labels = renderer.draw(view(**attrs)).labels
        return int((labels > 0).any(axis=1).sum())

    def torso_columns(**attrs: str) -> int:
        labels = renderer.draw(view(pose="standing", **attrs)).labels
        return int((labels == Part.UPPER).any(axis=0).sum())

    assert figure_rows(camera_distance="near") > figure_rows(camera_distance="far") + 10
    assert figure_rows(height="tall") > figure_rows(height="short") + 10
    # A camera mounted high foreshortens the body: for the same box height it looks stockier.
    assert torso_columns(camera_height="high") > torso_columns(camera_height="low")


def test_weather_changes_the_image():
    renderer = ProceduralRenderer(ProceduralRendererConfig(degradation=False))
    clear = pixels(renderer, view(weather="clear"))
    fog = pixels(renderer, view(weather="fog"))
    rain = pixels(renderer, view(weather="light rain"))
    assert fog.std() < 0.8 * clear.std()  # a veil lowers contrast
    assert float(np.abs(rain - clear).mean()) > 5


def test_every_value_of_the_shipped_taxonomy_has_a_drawing():
    """Guards against taxonomy drift: a new value would otherwise silently fall back to a generic look."""
    from dppp.pipeline.renderers.procedural import figure as figure
    from dppp.pipeline.renderers.procedural import renderer as procedural
    from dppp.pipeline.renderers.procedural import scene as scene
    from dppp.pipeline.renderers.procedural import style as style
    from dppp.pipeline.renderers.procedural.colours import SKIN_TONES
    from dppp.prompts.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    tables = {
        "viewpoint": figure.YAW,
        "build": figure.BUILD,
        "height": procedural.HEIGHT_SCALE,
        "upper_type": figure.UPPER,
        "lower_type": figure.LOWER,
        "pose": figure.STRIDE,
        "illumination": style.LIGHTS,
        "skin_tone": SKIN_TONES,
    }
    for name, table in tables.items():
        assert set(taxonomy.values(name)) <= set(table), name
    for camera in taxonomy.cameras:
        assert scene._recipe(camera.profile["scene"]) is not scene._generic, camera.profile["scene"]
        assert camera.profile["image_quality"] in style.QUALITY
        assert camera.profile["camera_angle"] in scene.HORIZON
    for name in taxonomy.palette:
        assert name in PALETTE
