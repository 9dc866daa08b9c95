"""Procedural renderer: numpy/PIL drawings of the sampled pedestrian, for CPU runs and tests.

No model, no GPU, deterministic, a few milliseconds an image. Each view is drawn in four steps, each in its
own module:

    procedural_scene    the camera's backdrop (scene per camera, horizon by mounting angle), cropped
    procedural_figure   the person: silhouette by gender / build / height / viewpoint / pose, garments;
                        its head, hair and headwear in procedural_head, bags and carried things in
                        procedural_carried, colours and garment patterns in procedural_palette
                        (continuous identity traits from procedural_traits, the taxonomy palette via
                        procedural_colours)
    procedural_style    shading, illumination, weather, camera colour cast, resolution loss, blur, noise

Randomness: identity-level detail is drawn from `view.identity_seed`, view-level detail from `view.seed`,
both through Philox streams, so the same ViewSpec gives the same pixels in any process, any batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from dppp.foundation.schema import StrictModel
from dppp.pipeline.renderer import FixedBatchSize, RenderedImage, RenderEstimate

if TYPE_CHECKING:
    from PIL import Image

    from dppp.prompts.spec import ViewSpec

# PIL and the drawing modules (canvas, scene, style: PIL) are imported inside the renderer: loading the config
# imports this module (the renderer registry), and must not pay for PIL.

# Bump whenever a change alters any rendered pixel: it is stored in every sample's json.
RENDERER_VERSION = 1
IMAGES_PER_CORE_S = 276.0  # bench_procedural.py, one core (docs/benchmarks.md)
Look = Literal["illustration", "photo"]  # procedural/look.py
DEFAULT_LOOK: Look = "illustration"


class ProceduralRendererConfig(StrictModel):
    kind: Literal["procedural"] = "procedural"
    height: int = Field(256, ge=32, le=2048)  # native drawing size; post-processing resizes afterwards
    width: int = Field(128, ge=16, le=1024)
    # Strength of the illumination and per-camera colour factors: 0 draws every view under neutral light
    # (the figure's own colours), 1 the full effect, up to 2 for a wider domain gap.
    lighting: float = Field(1.0, ge=0.0, le=2.0)
    weather: bool = True  # rain streaks, fog, snow, cloud desaturation
    degradation: bool = True  # camera quality: resolution loss, blur, motion, noise, compression
    # The taxonomy whose `palette:` names garment colours (None: the shipped one). Set it to the same file
    # as generate.prompts.taxonomy when you use your own taxonomy; unknown colours get hashed colours.
    taxonomy: Path | None = None
    # How the picture is made (procedural/look.py): "illustration" is the renderer's own look; "photo"
    # draws the same people with cloth texture, other proportions, another colour response and sensor: a
    # second domain. Left out of config dumps at its default, so a default config's fingerprint and
    # dataset.json stay what they were before looks existed.
    look: Look = Field(DEFAULT_LOOK, exclude_if=lambda look: look == DEFAULT_LOOK)


@dataclass(frozen=True)
class ProceduralDrawing:
    image: Image.Image  # RGB, config.height x config.width
    labels: np.ndarray  # (height, width) uint8 Part id of each pixel before style (0: background)


def estimate_procedural_hours(config: ProceduralRendererConfig, images: int) -> RenderEstimate:
    """CPU-core-hours for `images` (`dppp generate --dry-run`), at the measured rate."""
    hours = images / IMAGES_PER_CORE_S / 3600
    basis = f"procedural renderer at {IMAGES_PER_CORE_S:.0f} images/s per core (bench_procedural.py)"
    return RenderEstimate(hours, "CPU core", basis)


class ProceduralRenderer:
    # Each view is drawn on its own, so the batch changes no pixel: it only sets how often the worker's
    # encoder thread gets work.
    batch_size = 16

    def __init__(
        self,
        config: ProceduralRendererConfig | None = None,
        palette: Mapping[str, tuple[int, int, int]] | None = None,
    ):
        from dppp.pipeline.renderers.procedural.colours import Colours, load_palette

        self.config = config or ProceduralRendererConfig()
        palette = dict(palette) if palette is not None else load_palette(self.config.taxonomy)
        self._colours = Colours(palette)
        self._colour_names = sorted(palette)  # sorted: the choice of a second colour ignores YAML order

    def choose_batch_size(self) -> FixedBatchSize:
        return FixedBatchSize(self.batch_size)

    def describe(self) -> dict[str, Any]:
        import PIL

        cfg = self.config
        description = {
            "name": "procedural",
            "version": RENDERER_VERSION,
            "model_id": None,
            "revision": None,
            "scheduler": None,
            "steps": None,
            "guidance": None,
            "dtype": "uint8",
            "size": [cfg.height, cfg.width],
            "lighting": cfg.lighting,
            "weather": cfg.weather,
            "degradation": cfg.degradation,
            "taxonomy": str(cfg.taxonomy) if cfg.taxonomy else None,
            "versions": {"numpy": np.__version__, "pillow": PIL.__version__},
        }
        # Recorded only when not the default: a sample without "look" was drawn by the illustration look
        # (the only one before looks existed), and its json stays byte-identical to what it was.
        if cfg.look != DEFAULT_LOOK:
            description["look"] = cfg.look
        return description

    def render(self, views: Sequence[ViewSpec]) -> list[RenderedImage]:
        return [RenderedImage(image=self.draw(view).image, attempts=1) for view in views]

    def draw(self, view: ViewSpec) -> ProceduralDrawing:
        """Render one view, also returning which body part each pixel shows (for tests and debugging)."""

        from dppp.pipeline.renderers.procedural import look as look
        from dppp.pipeline.renderers.procedural import scene as scene
        from dppp.pipeline.renderers.procedural import style as style
        from dppp.pipeline.renderers.procedural.canvas import Canvas
        from dppp.pipeline.renderers.procedural.figure import Figure
        from dppp.pipeline.renderers.procedural.traits import identity_traits, view_traits

        cfg = self.config
        attrs = view.attributes
        photo = cfg.look == "photo"
        traits = look.photo_traits(view.identity_seed) if photo else identity_traits(view.identity_seed)
        vt = view_traits(view.seed)
        backdrop = scene.crop(
            attrs.get("scene", "street"),
            attrs.get("camera_angle", ""),
            cfg.height,
            cfg.width,
            vt.background_offset,
        )
        frame = _frame(attrs, traits, vt, cfg.height, cfg.width, framing=look.FRAMING if photo else 1.0)
        canvas = Canvas(backdrop)
        figure = Figure(attrs, self._colours, traits, vt, frame, self._colour_names)
        figure.draw(canvas)
        labels = canvas.label_array().copy()
        drawn = canvas.image
        if photo:
            look_rng = look.view_stream(view.seed)
            drawn = look.texture(drawn, labels, look.fabric(view.identity_seed), frame.u, look_rng)

        light = style.LIGHTS.get(attrs.get("illumination", ""), style.NEUTRAL)
        place = style.Placement(
            cx=frame.cx,
            half_width=figure.shoulder * frame.u * 1.1,
            feet_y=frame.top + figure.total * frame.u * frame.y_squash,
            u=frame.u,
        )
        strength = cfg.lighting
        outline = look.OUTLINE if photo else style.OUTLINE
        factor, region = style.shading(labels, place, light, vt.light_side, strength, outline=outline)
        image = style.expose(drawn, factor, region)
        if cfg.weather:
            image = style.weather(image, labels, attrs.get("weather", "clear"), vt.rng)
        image = style.tone(image, light, attrs.get("camera", str(view.camid)), strength)
        if photo:
            image = look.develop(image)
        if cfg.degradation:
            quality = style.QUALITY.get(attrs.get("image_quality", ""), style.GENERIC_QUALITY)
            if photo:  # the photo sensor's own noise replaces the default luminance noise
                quality = replace(quality, noise=0.0)
            image = style.degrade(
                image, quality, attrs.get("camera_distance", "medium"), light, vt.rng, cfg.lighting
            )
            if photo:
                image = look.sensor(image, look_rng, noise_gain=1.0 + (light.noise - 1.0) * strength)
        return ProceduralDrawing(image=image, labels=labels)


FILL = {"near": 0.9, "medium": 0.86, "far": 0.82}  # figure height / frame height by camera distance
HEIGHT_SCALE = {"short": 0.93, "average height": 0.965, "tall": 1.0}  # the `height` attribute
SQUASH = {"high": 0.93, "medium": 0.97, "low": 1.0}  # a camera mounted high sees the body foreshortened


def _frame(attrs: Mapping[str, str], traits, vt, height: int, width: int, framing: float = 1.0):
    """Place the figure in the frame: its pixel scale, centre line and head top. `framing` scales the
    figure's height in the frame (x 1.0 is exact in floating point: the default look's frame is unchanged)."""
    from dppp.pipeline.renderers.procedural.canvas import Frame
    from dppp.pipeline.renderers.procedural.figure import heads_tall

    squash = SQUASH.get(attrs.get("camera_height", "medium"), 0.97)
    fill = FILL.get(attrs.get("camera_distance", "medium"), 0.86) * HEIGHT_SCALE.get(
        attrs.get("height", ""), 0.965
    )
    on_screen = height * fill * (1.0 + 0.025 * vt.scale_jitter) * framing
    u = on_screen / (heads_tall(attrs, traits) * squash)
    feet = height * (0.975 + 0.012 * vt.shift_y)
    cx = width * (0.5 + 0.035 * vt.shift_x + 0.025 * traits.frame_offset)
    return Frame(u=u, cx=cx, top=feet - on_screen, y_squash=squash)
