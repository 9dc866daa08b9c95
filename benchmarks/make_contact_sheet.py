"""Draw the procedural renderer's contact sheet: 8 identities x 8 views, captioned.

    .venv/bin/python benchmarks/make_contact_sheet.py [--out docs/images/procedural_contact_sheet.png] [--seed 0] [--full-colour]

The views come from the product's prompt engine (prompts/engine.py) on the shipped taxonomy, exactly as
`dppp generate` samples them, with 8 views per identity: one row per identity, so a row shows identity
consistency across cameras, viewpoints, light, weather and camera quality.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "procedural_contact_sheet.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-colour", action="store_true", help="keep 24-bit colour (a 3x larger file)")
    args = parser.parse_args(argv)
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not args.full_colour:
        # 256 adaptive colours: a third of the bytes in git (the renders' sensor noise defeats PNG's
        # compression), and no visible difference at this scale.
        sheet = sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    sheet.save(args.out, format="PNG", optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")
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
