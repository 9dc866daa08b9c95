"""Diffusers renderer throughput against a bare diffusers pipeline call, same prompts, batch size and seeds.

What the renderer adds on top of `pipe(...)`: drawing each image's latents from its own CPU generator
(plus the identity-noise mix), the blank check on every output, and the bookkeeping of batches. The ratio
renderer images/s / bare images/s is that overhead (aim: >= 0.95). Both sides share one loaded pipeline,
run the same warm-up batch, and are timed batch by batch in alternating pairs; medians count, so the
spells of other processes on a shared machine do not.

    .venv/bin/python benchmarks/bench_diffusers.py                      # tiny offline pipeline on CPU
    python benchmarks/bench_diffusers.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --height 512 --width 512 --steps 50 --batch-size 1 --images 8    # a real model on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402

from pipeline.renderers.diffusers_renderer import DiffusersRenderer, DiffusersRendererConfig  # noqa: E402
from prompts.spec import ViewSpec  # noqa: E402

PROMPTS = [
    "a photo of a woman wearing a red hoodie and blue jeans, walking, street, full body",
    "a photo of a man wearing a black coat and grey trousers, standing, campus, full body",
    "a photo of a man carrying a backpack, green jacket, khaki shorts, mall, full body",
    "a photo of a woman wearing a white dress, seen from behind, night, full body",
]


def make_views(n: int) -> list[ViewSpec]:
    return [
        ViewSpec(
            pid=i // 4,
            view=i % 4,
            camid=i % 4,
            seed=10_000 + i,
            identity_seed=500 + i // 4,
            attributes={},
            prompt=PROMPTS[i % len(PROMPTS)],
            negative_prompt="blurry, lowres, deformed",
        )
        for i in range(n)
    ]


def bare(pipe, views, config: DiffusersRendererConfig) -> list:
    """What a user would write with diffusers alone: one generator per image, the pipeline draws latents."""
    import torch

    images = []
    for start in range(0, len(views), config.batch_size):
        chunk = views[start : start + config.batch_size]
        with torch.inference_mode():
            out = pipe(
                prompt=[v.prompt for v in chunk],
                negative_prompt=[v.negative_prompt for v in chunk],
                num_inference_steps=config.steps,
                guidance_scale=config.guidance,
                height=config.height,
                width=config.width,
                generator=[torch.Generator("cpu").manual_seed(v.seed) for v in chunk],
                output_type="pil",
            )
        images.extend(out.images)
    return images


def renderer_extra_seconds(renderer: DiffusersRenderer, views, rounds: int = 20) -> float:
    """Seconds per image of what the renderer does besides the pipeline call: drawing and mixing the
    initial latents, and the blank check."""
    from pipeline.renderers.diffusers_renderer import is_blank

    images = [r.image for r in renderer.render(views[: renderer.config.batch_size])]
    c = renderer.config

    def draw_noise():
        for _ in range(rounds):
            for v in views:
                renderer.initial_noise(v, 0)

    def check_blank():
        for _ in range(rounds):
            for image in images:
                is_blank(image, std_threshold=c.blank_std, mean_threshold=c.blank_mean)

    noise = timed(draw_noise).wall_s / (rounds * len(views))
    blank = timed(check_blank).wall_s / (rounds * len(images))
    return noise + blank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder; default: a tiny pipeline built offline now")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--identity-noise-share", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave as is)")
    args = parser.parse_args()

    import diffusers
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from pipeline.renderers.tiny_diffusion import build_tiny_diffusion

            model = str(build_tiny_diffusion(Path(tmp) / "tiny-diffusion"))
        config = DiffusersRendererConfig(
            model=model,
            height=args.height,
            width=args.width,
            steps=args.steps,
            guidance=args.guidance,
            batch_size=args.batch_size,
            dtype=args.dtype,
            attention=args.attention,
            identity_noise_share=args.identity_noise_share,
            threads=args.threads,
        )
        renderer, load, _ = timed(lambda: DiffusersRenderer(config))
        views = make_views(args.images)
        warm = views[: args.batch_size]
        bare(renderer.pipe, warm, config)
        renderer.render(warm)

        # Timed batch by batch, each renderer batch right next to the bare call on the same views, the
        # order alternating: a slow spell on the shared machine then hits both sides of a pair alike,
        # and medians over many short pairs shrug off the spells that remain.
        batches = [views[i : i + args.batch_size] for i in range(0, len(views), args.batch_size)]
        bare_times, renderer_times = [], []
        for r in range(args.repeats):
            for b, chunk in enumerate(batches):
                pair = [(bare_times, lambda c=chunk: bare(renderer.pipe, c, config))]
                pair.append((renderer_times, lambda c=chunk: renderer.render(c)))
                for times, fn in pair if (r + b) % 2 == 0 else pair[::-1]:
                    # (wall, CPU) seconds: on a shared machine the CPU time is the steadier one.
                    timing = timed(fn)
                    times.append((timing.wall_s, timing.cpu_s))
        extra = renderer_extra_seconds(renderer, views)

    rt = renderer.runtime
    def rates(times, which: int) -> float:
        return args.batch_size / statistics.median(t[which] for t in times)

    bare_ips, renderer_ips = rates(bare_times, 0), rates(renderer_times, 0)
    bare_cpu, renderer_cpu = rates(bare_times, 1), rates(renderer_times, 1)
    paired = statistics.median(b[0] / r[0] for b, r in zip(bare_times, renderer_times, strict=True))
    device = torch.cuda.get_device_name() if rt.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"model: {model if args.model else 'tiny offline pipeline'} ({type(renderer.pipe).__name__})")
    print(
        f"device: {device}; dtype {rt.dtype}; attention {rt.attention}; torch threads {torch.get_num_threads()}; "
        f"diffusers {diffusers.__version__}, torch {torch.__version__}"
    )
    print(
        f"images {args.images} at {args.height}x{args.width}, {args.steps} steps, guidance {args.guidance}, "
        f"batch {args.batch_size}, {len(bare_times)} timed batch pairs; model load {load:.2f}s"
    )
    print(f"bare diffusers pipeline call: {bare_ips:8.2f} images/s  {bare_cpu:8.2f} images/CPU-s")
    print(f"dppp diffusers renderer:      {renderer_ips:8.2f} images/s  {renderer_cpu:8.2f} images/CPU-s")
    print(
        f"overhead ratio (renderer / bare): wall {renderer_ips / bare_ips:.3f} (median of pairs: {paired:.3f}), "
        f"CPU {renderer_cpu / bare_cpu:.3f}"
    )
    # The same overhead measured directly, free of the run-to-run noise of two long timings: the
    # renderer's own per-image work (latents, identity mix, blank check) against the bare per-image time.
    per_image = 1.0 / bare_ips
    print(
        f"renderer's own work per image: {extra * 1e3:.3f} ms of {per_image * 1e3:.1f} ms "
        f"-> expected ratio {per_image / (per_image + extra):.4f}"
    )


if __name__ == "__main__":
    main()
