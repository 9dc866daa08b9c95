"""Draw the procedural renderer's contact sheet: 8 identities x 8 views, captioned.

    .venv/bin/python benchmarks/make_contact_sheet.py [--out docs/images/procedural_contact_sheet.png] [--seed 0] [--full-colour]
    .venv/bin/python benchmarks/make_contact_sheet.py --looks [--out docs/images/procedural_looks.png]

The views come from the product's prompt engine (prompts/engine.py) on the shipped taxonomy, exactly as
`dppp generate` samples them, with 8 views per identity: one row per identity, so a row shows identity
consistency across cameras, viewpoints, light, weather and camera quality. `--looks` compares the two
looks (`generate.renderer.look`, docs/renderers.md): 4 identities x 4 views, each identity's row drawn
by the illustration look and, under it, the same views drawn by the photo look.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from dppp.foundation.contact_sheet import make_contact_sheet  # noqa: E402
from dppp.pipeline.renderers.procedural.renderer import ProceduralRenderer, ProceduralRendererConfig  # noqa: E402
from dppp.prompts.config import PromptsConfig, ViewsConfig  # noqa: E402
from dppp.prompts.engine import PromptEngine  # noqa: E402
from dppp.prompts.spec import ViewSpec  # noqa: E402
from dppp.prompts.taxonomy import load_taxonomy  # noqa: E402


def sample_views(identities: int, views_per_identity: int, seed: int = 0) -> list[ViewSpec]:
    """`views_per_identity` views of each of the first `identities` pids, from the prompt engine."""
    config = PromptsConfig(
        views=ViewsConfig(
            distribution="fixed", mean=views_per_identity, min=1, max=max(views_per_identity, 1)
        )
    )
    engine = PromptEngine(load_taxonomy(), config, seed, identities=identities)
    return list(engine.iter_views(range(identities)))


def looks_sheet(seed: int = 0, identities: int = 4, views_per_identity: int = 4) -> Image.Image:
    """Each identity's views in the illustration look, and under them the same views in the photo look."""
    views = sample_views(identities, views_per_identity, seed=seed)
    drawn = {
        look: ProceduralRenderer(ProceduralRendererConfig(look=look)).render(views)
        for look in ("illustration", "photo")
    }
    images, captions = [], []
    for pid in range(identities):
        row = views[pid * views_per_identity : (pid + 1) * views_per_identity]
        for look in ("illustration", "photo"):
            for i, v in enumerate(row):
                images.append(drawn[look][pid * views_per_identity + i].image)
                captions.append(f"{look} p{v.pid} c{v.camid} {v.attributes['viewpoint']}")
    return make_contact_sheet(
        images,
        captions,
        columns=views_per_identity,
        tile_size=(96, 192),  # 3/4 size: the sheet stays under 300 KB in git
        caption_lines=2,
        title="procedural looks: illustration (upper row) vs photo (lower row), same people and views",
    )


def save_small(sheet: Image.Image, out: str, full_colour: bool) -> Image.Image:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if not full_colour:
        # 256 adaptive colours: a third of the bytes in git (the renders' sensor noise defeats PNG's
        # compression), and no visible difference at this scale.
        sheet = sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    sheet.save(out, format="PNG", optimize=True)
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="default: docs/images/procedural_contact_sheet.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-colour", action="store_true", help="keep 24-bit colour (a 3x larger file)")
    parser.add_argument("--looks", action="store_true", help="compare the illustration and photo looks")
    args = parser.parse_args(argv)
    images_dir = ROOT / "docs" / "images"
    if args.looks:
        save_small(
            looks_sheet(args.seed), args.out or str(images_dir / "procedural_looks.png"), args.full_colour
        )
        return 0
    views = sample_views(8, 8, seed=args.seed)
    renderer = ProceduralRenderer(ProceduralRendererConfig())
    images = [r.image for r in renderer.render(views)]
    captions = []
    for v in views:
        a = v.attributes
        captions.append(f"p{v.pid} c{v.camid} {a['viewpoint']} | {a['illumination']}")
    sheet = make_contact_sheet(
        images,
        captions,
        columns=8,
        caption_lines=3,
        title="dppp procedural renderer: 8 identities (rows) x 8 views (camera, viewpoint, illumination)",
    )
    save_small(sheet, args.out or str(images_dir / "procedural_contact_sheet.png"), args.full_colour)
    for pid in range(8):
        a = views[pid * 8].attributes
        print(
            f"p{pid}: {a['gender']}, {a['build']}, {a['upper_color']} {a['upper_pattern']} {a['upper_type']}, "
            f"{a['lower_color']} {a['lower_type']}, {a['footwear_color']} {a['footwear']}, hair "
            f"{a['hair_length']} {a['hair_style']} {a['hair_color']}, headwear {a['headwear']}, bag {a['bag']} "
            f"({a['bag_color']}), accessory {a['accessory']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
