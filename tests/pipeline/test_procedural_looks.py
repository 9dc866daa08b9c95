"""The procedural renderer's looks (`generate.renderer.look`): the default is today's renderer to the byte,
the photo look is deterministic, measurably another domain, and keeps the people recognisable."""

from __future__ import annotations

import colorsys
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL
import pytest

from dppp.pipeline.renderers.procedural import look as look_module
from dppp.pipeline.renderers.procedural.canvas import Part
from dppp.pipeline.renderers.procedural.renderer import ProceduralRenderer, ProceduralRendererConfig
from tests.pipeline.test_procedural import VARIED, digest, view

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ProceduralRendererConfig(look="photo")
# VARIED and four clean views (sharp HD, clear weather) turned every way.
VIEWS = VARIED + [
    view(seed=10 + i, identity_seed=20 + i, viewpoint=v)
    for i, v in enumerate(["front", "back", "left side", "right side"])
]
CLEAN = VIEWS[len(VARIED) :]
# sha256 over the digests of VARIED drawn by the renderer before looks existed (main at 1b4ecf5), with
# the library versions that drew them: Pillow's resampling and JPEG may change a pixel between versions.
BEFORE_LOOKS = "9a0e848f8db3fe7cc84dbed105fc63635032fd8c73ec27585e04776c58da59fc"
BEFORE_LOOKS_VERSIONS = ("2.4.6", "13.0.0")


# -- the default look is the renderer as it was ---------------------------------------------------------
def test_default_look_draws_the_pixels_of_the_renderer_before_looks():
    if (np.__version__, PIL.__version__) != BEFORE_LOOKS_VERSIONS:
        pytest.skip(f"reference digest drawn with numpy/Pillow {BEFORE_LOOKS_VERSIONS}")
    digests = digest(ProceduralRenderer(), VARIED)
    assert hashlib.sha256("".join(digests).encode()).hexdigest() == BEFORE_LOOKS
    assert digest(ProceduralRenderer(ProceduralRendererConfig(look="illustration")), VARIED) == digests


def test_default_look_never_runs_the_photo_pipeline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the default look reached the photo look's code")

    for name in ("photo_traits", "fabric", "view_stream", "texture", "develop", "sensor"):
        monkeypatch.setattr(look_module, name, refuse)
    assert len(ProceduralRenderer().render(VARIED)) == len(VARIED)


def test_default_look_is_left_out_of_config_dumps_and_descriptions():
    """A default config dumps (dataset.json, the config fingerprint) and describes itself (every sample's
    json) exactly as before looks existed; the photo look says so in both."""
    assert "look" not in ProceduralRendererConfig().model_dump(mode="json")
    assert "look" not in ProceduralRenderer().describe()
    assert PHOTO.model_dump(mode="json")["look"] == "photo"
    assert ProceduralRenderer(PHOTO).describe()["look"] == "photo"
    assert ProceduralRendererConfig.model_validate(PHOTO.model_dump(mode="json")) == PHOTO


def test_an_unknown_look_is_refused():
    with pytest.raises(ValueError, match="illustration"):
        ProceduralRendererConfig(look="oil painting")


# -- the photo look is deterministic --------------------------------------------------------------------
def test_photo_look_is_identical_across_batches_and_processes():
    first = digest(ProceduralRenderer(PHOTO), VARIED)
    assert [digest(ProceduralRenderer(PHOTO), [v])[0] for v in reversed(VARIED)] == first[::-1]
    code = (
        "import json, sys\n"
        "sys.path.insert(0, '.')\n"
        "from tests.pipeline.test_procedural import VARIED, digest\n"
        "from dppp.pipeline.renderers.procedural.renderer import ProceduralRenderer, ProceduralRendererConfig\n"
        "print(json.dumps(digest(ProceduralRenderer(ProceduralRendererConfig(look='photo')), VARIED)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == first
    assert not set(first) & set(digest(ProceduralRenderer(), VARIED))


SHARD_CODE = """
import hashlib, json, sys, tempfile
sys.path.insert(0, '.')
from dppp.dataset.shard_writer import write_shard
from dppp.pipeline.plan import ShardPlan
from dppp.pipeline.worker import ShardWorker
from tests.pipeline.test_generate import gen_config

with tempfile.TemporaryDirectory() as tmp:
    config = gen_config(tmp + '/ds', identities=2, **{'renderer.look': 'photo'})
    samples = ShardWorker(config, threads=1).render(ShardPlan(0, (0, 1), 0))
    write_shard(samples, tmp + '/shard.tar')
    data = open(tmp + '/shard.tar', 'rb').read()
print(json.dumps({'sha256': hashlib.sha256(data).hexdigest(), 'json': samples[0].metadata}))
"""


def test_photo_look_shards_are_byte_identical_across_processes_and_say_which_look():
    """The same config and seed give the same shard bytes in two processes; every sample's json records
    the look in its renderer description."""
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", SHARD_CODE],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=180,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0]["sha256"] == runs[1]["sha256"]
    assert runs[0]["json"]["renderer"]["look"] == "photo"


# -- the photo look is another domain -------------------------------------------------------------------
def high_frequency_energy(image) -> float:
    grey = np.asarray(image, np.float32).mean(axis=2)
    laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float((laplacian**2).mean())


def figure_height(labels: np.ndarray) -> int:
    rows = np.nonzero((labels > 0).any(axis=1))[0]
    return int(rows[-1] - rows[0] + 1)


def test_photo_look_shifts_colour_texture_sensor_and_proportions():
    default, photo = ProceduralRenderer(), ProceduralRenderer(PHOTO)
    for spec in VIEWS:
        a, b = default.draw(spec), photo.draw(spec)
        mean_a = np.asarray(a.image, np.float32).reshape(-1, 3).mean(axis=0)
        mean_b = np.asarray(b.image, np.float32).reshape(-1, 3).mean(axis=0)
        # Warmer white balance: red minus blue up by more than 8 levels (of 255) in every view.
        assert (mean_b[0] - mean_b[2]) - (mean_a[0] - mean_a[2]) > 8, spec.attributes
        # Another sensor: high-frequency energy differs by more than 30% either way (cloth texture and
        # sharpening add it; half-resolution chroma noise has less than the default's luminance noise).
        ratio = high_frequency_energy(b.image) / high_frequency_energy(a.image)
        assert abs(np.log(ratio)) > np.log(1.3), (spec.attributes, ratio)
        # Looser framing: the person is 5-12% shorter in pixels.
        assert 0.88 < figure_height(b.labels) / figure_height(a.labels) < 0.95
    for spec in CLEAN:  # without camera noise, the texture shows as added fine detail
        assert high_frequency_energy(photo.draw(spec).image) > 1.3 * high_frequency_energy(
            default.draw(spec).image
        )


def test_photo_look_has_a_relatively_smaller_head():
    default, photo = ProceduralRenderer(), ProceduralRenderer(PHOTO)
    for spec in CLEAN[:2]:
        a, b = default.draw(spec), photo.draw(spec)
        head = [
            int(np.isin(d.labels, (Part.SKIN, Part.HAIR))[: figure_height(d.labels) // 5].sum())
            for d in (a, b)
        ]
        area = [int((d.labels > 0).sum()) for d in (a, b)]
        assert head[1] / area[1] < 0.95 * head[0] / area[0]


# -- and the people stay recognisable --------------------------------------------------------------------
COLOURS = [
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "teal",
    "pink",
    "navy",
    "dark green",
    "brown",
]


def upper_hue(renderer: ProceduralRenderer, spec) -> float:
    drawing = renderer.draw(spec)
    pixels = np.asarray(drawing.image, np.float32)[drawing.labels == Part.UPPER]
    return colorsys.rgb_to_hsv(*(np.median(pixels, axis=0) / 255.0))[0] * 360.0


def test_photo_look_keeps_each_persons_garment_hue():
    """The dominant hue of the upper garment of the same person in the same view moves by under 30 degrees
    in every case and under 10 on average (the white balance moves pinks and purples most)."""
    default, photo = ProceduralRenderer(), ProceduralRenderer(PHOTO)
    drift = []
    for colour in COLOURS:
        for identity_seed in (1, 2):
            spec = view(seed=identity_seed, identity_seed=identity_seed, upper_color=colour)
            difference = abs(upper_hue(default, spec) - upper_hue(photo, spec))
            drift.append(min(difference, 360.0 - difference))
    assert max(drift) < 30.0, dict(zip(COLOURS, drift[::2], strict=True))
    assert float(np.mean(drift)) < 10.0
