"""Draw the procedural renderer's contact sheet: 8 identities x 8 views, captioned.

    .venv/bin/python benchmarks/make_contact_sheet.py [--out docs/images/procedural_contact_sheet.png]

Views are sampled here from prompts/taxonomy.yaml with a small stand-alone sampler (weighted picks, plus
the few rules that matter for drawing), so the sheet depends only on the renderer. Each identity is shown
from the 8 viewpoints, each on another camera, so one row shows both identity consistency and the
view-level domain factors (scene, light, weather, camera quality).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.contact_sheet import make_contact_sheet  # noqa: E402
from pipeline.renderers.procedural import ProceduralRenderer, ProceduralRendererConfig  # noqa: E402
from prompts.spec import ViewSpec  # noqa: E402

VIEWPOINTS = ["front", "back", "left side", "right side", "front-left three-quarter",
              "front-right three-quarter", "back-left three-quarter", "back-right three-quarter"]
INDOOR_LIGHT = ["fluorescent indoor lighting", "fluorescent indoor lighting", "soft morning light", "backlit"]


def _pick(rng: np.random.Generator, values: dict, skip: tuple[str, ...] = ()) -> str:
    names = [k for k in values if k not in skip]
    weights = np.array([float(values[k]) for k in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def sample_views(identities: int, views_per_identity: int, seed: int = 0,
                 taxonomy: Path = ROOT / "prompts" / "taxonomy.yaml") -> list[ViewSpec]:
    """Deterministic, plausible ViewSpecs for demos and benchmarks (not the product's sampler)."""
    tax = yaml.safe_load(taxonomy.read_text())
    out: list[ViewSpec] = []
    for pid in range(identities):
        rng = np.random.Generator(np.random.Philox(key=[seed, pid]))
        ident: dict[str, str] = {}
        for name, dim in tax["identity"].items():
            skip: tuple[str, ...] = ()
            if name == "lower_type" and ident.get("upper_type") == "dress":
                skip = ("jeans", "trousers", "shorts", "sweatpants", "cargo pants")
            if name == "hair_style" and ident.get("hair_length") in ("bald", "very short"):
                skip = ("ponytail", "bun", "braided", "wavy", "curly")
            if name == "upper_type" and ident.get("gender") == "man":
                skip = ("dress", "blouse")
            if name == "lower_type" and ident.get("gender") == "man":
                skip = ("skirt", "long skirt", "leggings")
            if name == "footwear" and ident.get("gender") == "man":
                skip = ("high heels",)
            ident[name] = _pick(rng, dim["values"], skip)
        cameras = list(tax["cameras"])
        order = rng.permutation(len(cameras))
        for v in range(views_per_identity):
            cam = cameras[int(order[v % len(cameras)])]
            indoor = bool(cam["indoor"])
            attrs = dict(ident)
            attrs["viewpoint"] = VIEWPOINTS[v % len(VIEWPOINTS)]
            attrs["pose"] = _pick(rng, tax["view"]["pose"]["values"])
            if indoor:
                attrs["illumination"] = INDOOR_LIGHT[int(rng.integers(len(INDOOR_LIGHT)))]
                attrs["weather"] = "clear"
            else:
                attrs["illumination"] = _pick(rng, tax["view"]["illumination"]["values"],
                                              ("fluorescent indoor lighting",))
                attrs["weather"] = _pick(rng, tax["view"]["weather"]["values"])
            attrs.update(camera=str(cam["camid"]), scene=cam["scene"], indoor="yes" if indoor else "no",
                         camera_height=cam["mount_height"], camera_angle=cam["angle"],
                         camera_distance=cam["distance"], image_quality=cam["quality"])
            out.append(ViewSpec(pid=pid, view=v, camid=int(cam["camid"]), seed=seed * 1_000_003 + pid * 1009 + v,
                                identity_seed=seed * 7919 + pid, attributes=attrs, prompt="", negative_prompt=""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "procedural_contact_sheet.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    views = sample_views(8, 8, seed=args.seed)
    renderer = ProceduralRenderer(ProceduralRendererConfig())
    images = [r.image for r in renderer.render(views)]
    captions = []
    for v in views:
        a = v.attributes
        captions.append(f"p{v.pid} c{v.camid} {a['viewpoint']} | {a['illumination']}")
    sheet = make_contact_sheet(images, captions, columns=8, caption_lines=3,
                               title="dppp procedural renderer: 8 identities (rows) x 8 views (camera, viewpoint,"
                                     " illumination)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, format="PNG", optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")
    for pid in range(8):
        a = views[pid * 8].attributes
        print(f"p{pid}: {a['gender']}, {a['build']}, {a['upper_color']} {a['upper_pattern']} {a['upper_type']}, "
              f"{a['lower_color']} {a['lower_type']}, {a['footwear_color']} {a['footwear']}, hair "
              f"{a['hair_length']} {a['hair_style']} {a['hair_color']}, headwear {a['headwear']}, bag {a['bag']} "
              f"({a['bag_color']}), accessory {a['accessory']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
