"""Procedural renderer throughput, images/s per core, against a blank-canvas baseline measured in the same run.

    .venv/bin/python benchmarks/bench_procedural.py [--images 512] [--height 256 --width 128]

Single-threaded (BLAS / OpenMP threads pinned to 1 before numpy loads). "Per core" figures divide by the
process's CPU time, not the wall clock, so they stay meaningful on a machine shared with other work; wall
figures are printed beside them; each figure is the best of 3 runs. The baseline fills a blank canvas of the same size and encodes it the
same way: the ratio shows what the drawing itself costs on top of the unavoidable per-image work.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from make_contact_sheet import sample_views  # noqa: E402
from PIL import Image  # noqa: E402
from timing import timed  # noqa: E402

from dppp.pipeline.postprocess import OutputConfig, finish  # noqa: E402
from dppp.pipeline.renderers.procedural.renderer import ProceduralRenderer, ProceduralRendererConfig  # noqa: E402


def measure(label: str, count: int, work: Callable[[], None], repeats: int = 3) -> tuple[float, float]:
    """Best of `repeats` runs (after a warm-up that fills caches such as the scene backdrops): on a shared
    machine the fastest run is the one least disturbed by other work."""
    _, best_wall, best_cpu = timed(work, repeats, statistic="best", warmup=1)
    per_core, per_wall = count / best_cpu, count / best_wall
    print(
        f"{label:<44} {per_core:9.1f} img/s per core   {per_wall:9.1f} img/s wall   "
        f"{1000 * best_cpu / count:7.3f} ms/img"
    )
    return per_core, per_wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    identities = max(1, args.images // 8)
    views = sample_views(identities, 8, seed=1)
    n = len(views)
    size = {"height": args.height, "width": args.width}
    output = OutputConfig(height=args.height, width=args.width, format="jpg", quality=90)
    print(
        f"procedural renderer benchmark: {n} views ({identities} identities x 8), {args.height}x{args.width}, "
        f"1 thread, {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )

    blank = Image.new("RGB", (args.width, args.height), (128, 128, 128))
    base_fill, _ = measure(
        "baseline: blank canvas fill",
        n,
        lambda: [Image.new("RGB", (args.width, args.height), (128, 128, 128)) for _ in views],
    )
    base_enc, _ = measure(
        "baseline: blank canvas fill + jpg encode",
        n,
        lambda: [finish(Image.new("RGB", blank.size, (128, 128, 128)), output) for _ in views],
    )

    full = ProceduralRenderer(ProceduralRendererConfig(**size))
    bare = ProceduralRenderer(
        ProceduralRendererConfig(**size, lighting=0.0, weather=False, degradation=False)
    )
    draw_only, _ = measure("procedural: figure + scene only (no style)", n, lambda: bare.render(views))
    render, render_wall = measure("procedural: full render (default config)", n, lambda: full.render(views))
    images = [r.image for r in full.render(views)]
    encoded, _ = measure(
        "procedural: full render + jpg q90 encode",
        n,
        lambda: [finish(r.image, output) for r in full.render(views)],
    )
    encode_costs = {}
    for fmt in ("jpg", "png", "webp"):
        out = OutputConfig(height=args.height, width=args.width, format=fmt, quality=90)
        encode_costs[fmt], _ = measure(
            f"encode only: {fmt}", n, lambda out=out: [finish(im, out) for im in images]
        )

    print()
    print(f"full render:              {render:8.1f} img/s per core ({render_wall:.1f} wall)")
    print(f"render + jpg encode:      {encoded:8.1f} img/s per core")
    print(
        f"ratio render+encode / baseline fill+encode cost: {base_enc / encoded:6.1f}x slower than a blank image"
    )
    print(
        f"ratio full render cost / drawing-only cost:      {draw_only / render:6.2f}x (light, weather, camera)"
    )
    print(
        "encode cost per image: "
        + ", ".join(f"{fmt} {1000 / v:.3f} ms" for fmt, v in encode_costs.items())
        + f" (render {1000 / render:.3f} ms, blank fill {1000 / base_fill:.4f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
