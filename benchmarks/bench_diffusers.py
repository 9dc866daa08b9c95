"""Diffusers renderer throughput: against a bare diffusers pipeline call, against the hardware, end to end.

For each setting (mode x batch size) it prints:
- images/s of a bare `pipe(...)` call (what a user writes with diffusers alone: one generator per image,
  PIL output) and of the dppp renderer on the same pipeline, views and batches, timed batch by batch in
  alternating pairs; the median of the per-pair ratios is the renderer's overhead (aim >= 0.97);
- achieved TFLOP/s from FLOPs counted with torch.utils.flop_counter (one UNet forward with classifier-free
  guidance per step, one VAE decode, the text encoder), and its fraction of the device's peak: the
  datasheet's dense bf16/fp16 rate where the card is known, and a bf16 matrix product measured in this run;
- peak GPU memory, and where one batch's time goes: text encoding, denoising, VAE decode, conversion to
  images (each timed with a device synchronisation around it, in one extra batch).

Modes: eager, compile (torch.compile of the UNet and the VAE decoder, whole graphs, static shapes), each
optionally with channels_last (`-cl`). `--worker` adds the end-to-end check: the shard worker (render ->
encode -> tar -> publish to local storage, two shards in flight as in a Ray actor) against the renderer
alone on the same views. `--probe` runs the `batch_size: auto` probe. `--sd15-shaped` builds Stable
Diffusion 1.5's architecture with random weights (pipeline/renderers/sd15_shaped.py): SD 1.5's cost,
no download.

    .venv/bin/python benchmarks/bench_diffusers.py                     # tiny offline pipeline on CPU
    python benchmarks/bench_diffusers.py --sd15-shaped --height 512 --width 256 --steps 25 \\
        --dtype bf16 --modes eager,compile-cl --batch-sizes 8,32 --worker   # SD 1.5's cost on a GPU
    (benchmarks/gpu_check.sh runs the whole GPU sweep in one call.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig  # noqa: E402
from dppp.pipeline.renderers.diffusers_renderer import DiffusersRenderer  # noqa: E402
from dppp.prompts.spec import ViewSpec  # noqa: E402

PROMPTS = [
    "a photo of a woman wearing a red hoodie and blue jeans, walking, street, full body",
    "a photo of a man wearing a black coat and grey trousers, standing, campus, full body",
    "a photo of a man carrying a backpack, green jacket, khaki shorts, mall, full body",
    "a photo of a woman wearing a white dress, seen from behind, night, full body",
]
# Dense (no sparsity) half-precision tensor-core rates from the vendors' datasheets, TFLOP/s: leads, beside
# the matrix product measured in the same run.
DATASHEET_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


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

    with torch.inference_mode():
        return pipe(
            prompt=[v.prompt for v in views],
            negative_prompt=[v.negative_prompt for v in views],
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            height=config.height,
            width=config.width,
            generator=[torch.Generator("cpu").manual_seed(v.seed) for v in views],
            output_type="pil",
        ).images


# --------------------------------------------------------------------------------------- the device


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clock(fn) -> float:
    synchronize()
    started = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - started


def measured_matmul_tflops(dtype) -> float | None:
    """A large matrix product's rate in this run: the ceiling the card reaches on random data."""
    import torch

    if not torch.cuda.is_available():
        return None
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * 20 / (start.elapsed_time(end) / 1e3) / 1e12


def datasheet_tflops(device_name: str) -> float | None:
    return next((rate for key, rate in DATASHEET_TFLOPS.items() if key in device_name), None)


def flops_per_image(renderer: DiffusersRenderer) -> dict[str, float]:
    """FLOPs of one image, counted on the eager modules: steps x (UNet at batch 2, CFG) + decode + text."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    pipe, c = renderer.pipe, renderer.config
    device, dtype = renderer.runtime.device, renderer.runtime.torch_dtype
    channels, h, w = renderer.latent_shape()
    latents = torch.randn((2, channels, h, w), device=device, dtype=dtype)
    ids = pipe.tokenizer(
        ["a photo"] * 2, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids

    def count(fn) -> float:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            fn()
        return float(counter.get_total_flops())

    text = count(lambda: pipe.text_encoder(ids.to(device)))
    context = pipe.text_encoder(ids.to(device))[0]
    unet = count(lambda: pipe.unet(latents, 999, encoder_hidden_states=context))
    vae = count(lambda: pipe.vae.decode(latents[:1] / pipe.vae.config.scaling_factor))
    guided = c.guidance > 1  # the pipeline doubles the batch for classifier-free guidance
    return {
        "unet_forward_batch2": unet,
        "vae_decode": vae,
        "text_encoder_batch2": text,
        "per_image": c.steps * (unet if guided else unet / 2) + vae + (text if guided else text / 2),
    }


# ------------------------------------------------------------------------------------------ settings


class Timed:
    """A stand-in for the pipeline that times each call (with device syncs) and passes everything on."""

    def __init__(self, pipe):
        self._pipe, self.seconds = pipe, 0.0

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kwargs):
        synchronize()
        started = time.perf_counter()
        out = self._pipe(**kwargs)
        synchronize()
        self.seconds += time.perf_counter() - started
        return out


def breakdown(renderer: DiffusersRenderer, views) -> dict[str, float]:
    """Seconds of one renderer batch spent in text encoding, denoising, VAE decode and conversion."""
    pipe = renderer.pipe
    spent = {"text": 0.0, "decode": 0.0}

    def timing(name, fn):
        def wrapper(*args, **kwargs):
            synchronize()
            started = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize()
            spent[name] += time.perf_counter() - started
            return out

        return wrapper

    encode, decode = pipe.encode_prompt, pipe.vae.decode
    pipe.encode_prompt, pipe.vae.decode = timing("text", encode), timing("decode", decode)
    timed_pipe = Timed(pipe)
    renderer.pipe = timed_pipe
    try:
        total = clock(lambda: renderer.render(views))
    finally:
        renderer.pipe = pipe
        del pipe.encode_prompt, pipe.vae.decode  # back to the class's own methods
    return {
        "text_s": spent["text"],
        "denoise_s": timed_pipe.seconds - spent["text"] - spent["decode"],
        "decode_s": spent["decode"],
        "convert_s": total - timed_pipe.seconds,
        "total_s": total,
    }


MODES = ("eager", "eager-cl", "compile", "compile-cl", "compile-cl+mm")


def set_mode(pipe, eager_modules: dict, mode: str) -> None:
    """Put the shared pipeline back to its eager modules, in the memory format `mode` asks for, with
    torch.compile's caches cleared (a new inductor option must not reuse an older setting's graphs)."""
    import torch
    import torch._dynamo
    import torch._inductor.config

    pipe.unet, pipe.vae.decoder = eager_modules["unet"], eager_modules["decoder"]
    layout = torch.channels_last if "-cl" in mode else torch.contiguous_format
    pipe.unet.to(memory_format=layout)
    pipe.vae.to(memory_format=layout)
    torch._dynamo.reset()
    # "+mm": 1x1 convolutions (SD 1.5's attention projections) as matrix products, a lever from PyTorch's
    # own diffusion speed-up work.
    torch._inductor.config.conv_1x1_as_mm = mode.endswith("+mm")


def run_setting(pipe, base: dict, mode: str, batch: int, views, args, flops: float, peaks: dict) -> dict:
    import torch

    options = {"batch_size": batch, "compile": mode.startswith("compile"), "channels_last": "-cl" in mode}
    config = DiffusersRendererConfig(**{**base, **options})
    renderer = DiffusersRenderer(config, pipeline=pipe)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    batches = [
        views[i : i + batch] for i in range(0, len(views), batch) if len(views[i : i + batch]) == batch
    ]
    warm_s = clock(lambda: renderer.render(batches[0]))  # compiles, in compile modes
    bare(pipe, batches[0], config)
    bare_s, renderer_s, ratios = [], [], []
    for pair in range(args.pairs):
        chunk = batches[pair % len(batches)]
        sides = [
            ("bare", lambda c=chunk: bare(pipe, c, config)),
            ("renderer", lambda c=chunk: renderer.render(c)),
        ]
        times = {}
        for name, fn in sides if pair % 2 == 0 else sides[::-1]:
            times[name] = clock(fn)
        bare_s.append(times["bare"])
        renderer_s.append(times["renderer"])
        ratios.append(times["bare"] / times["renderer"])
    parts = breakdown(renderer, batches[0])
    renderer_ips = batch / statistics.median(renderer_s)
    achieved = renderer_ips * flops / 1e12
    first, again = renderer.render(batches[0]), renderer.render(batches[0])
    repeatable = all(a.image.tobytes() == b.image.tobytes() for a, b in zip(first, again, strict=True))
    return {
        "mode": mode,
        "batch": batch,
        "warmup_s": round(warm_s, 2),
        "bare_images_per_s": round(batch / statistics.median(bare_s), 3),
        "renderer_images_per_s": round(renderer_ips, 3),
        "renderer_over_bare": round(statistics.median(ratios), 4),
        "ratio_spread": [round(min(ratios), 4), round(max(ratios), 4)],
        "pairs": args.pairs,
        "achieved_tflops": round(achieved, 1),
        "fraction_of_datasheet": round(achieved / peaks["datasheet"], 3) if peaks["datasheet"] else None,
        "fraction_of_measured_matmul": round(achieved / peaks["measured"], 3) if peaks["measured"] else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
        "breakdown_s": {k: round(v, 4) for k, v in parts.items()},
        "render_attempts_max": max(r.attempts for r in first + again),
        "repeatable_in_process": repeatable,
        "renderer": renderer,
    }


def worker_check(renderer: DiffusersRenderer, model: str, base: dict, shards: int) -> dict:
    """The shard worker's images/s (render -> encode -> tar -> publish) against the renderer alone."""
    from dppp.pipeline.config import GenerateConfig
    from dppp.pipeline.generate import build_plan
    from dppp.pipeline.worker import ShardWorker

    with tempfile.TemporaryDirectory() as out:
        rt = renderer.runtime
        options = {
            "batch_size": renderer.batch_size,
            "compile": rt.compile,
            "channels_last": rt.channels_last,
        }
        renderer_block = {**base, "kind": "diffusers", "model": model, **options}
        config = GenerateConfig(
            out=out,
            identities=shards * 8,
            ids_per_shard=8,
            renderer=renderer_block,
            output={"height": 256, "width": 128, "format": "jpg", "quality": 90},
            # 8 identities of max(2, batch/4) views: whole batches per shard, so no shard pads its last one
            prompts={"views": {"distribution": "fixed", "mean": max(2, renderer.batch_size // 4)}},
        )
        plans = build_plan(config).shards[:shards]
        worker = ShardWorker(config, renderer=renderer, name="bench")
        views = [worker.views(plan) for plan in plans]
        images = sum(len(v) for v in views)
        alone_s = clock(lambda: [renderer.render(v) for v in views])
        commits: list[float] = []
        results = []

        def run(plan):
            result = worker.run(plan)
            commits.append(time.perf_counter())
            results.append(result)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:  # as a Ray actor runs them: two shards in flight
            list(pool.map(run, plans))
        worker_s = time.perf_counter() - started
    commits.sort()
    # Between the first and the last commit: the pool's steady rate, without the first shard's start and
    # with only one shard's publish tail (a long job has one such tail in hundreds of shards).
    steady = sum(len(v) for v in views[1:]) / (commits[-1] - commits[0]) if len(commits) > 1 else None
    return {
        "shards": len(plans),
        "images": images,
        "renderer_alone_images_per_s": round(images / alone_s, 3),
        "worker_images_per_s": round(images / worker_s, 3),
        "worker_over_renderer": round(alone_s / worker_s, 4),
        "steady_worker_over_renderer": round(steady / (images / alone_s), 4) if steady else None,
        "render_time_in_worker_over_alone": round(sum(r.render_s for r in results) / alone_s, 4),
        "publish_s": [round(r.publish_s, 3) for r in results],
    }


def print_row(row: dict) -> None:
    parts = row["breakdown_s"]
    print(
        f"{row['mode']:>13} b{row['batch']:<3} bare {row['bare_images_per_s']:7.2f} img/s | renderer "
        f"{row['renderer_images_per_s']:7.2f} img/s | renderer/bare {row['renderer_over_bare']:.3f} "
        f"[{row['ratio_spread'][0]:.3f}-{row['ratio_spread'][1]:.3f}] | {row['achieved_tflops']:6.1f} "
        f"TFLOP/s = {row['fraction_of_datasheet']} of datasheet, {row['fraction_of_measured_matmul']} "
        f"of measured | mem {row['peak_memory_gib']} GiB | warm-up {row['warmup_s']}s | text "
        f"{parts['text_s']:.3f} denoise {parts['denoise_s']:.3f} decode {parts['decode_s']:.3f} "
        f"convert {parts['convert_s']:.3f} s | attempts<= {row['render_attempts_max']} | repeatable "
        f"{row['repeatable_in_process']}",
        flush=True,
    )


def run_worker_check(report: dict, renderer: DiffusersRenderer, model: str, base: dict, shards: int) -> None:
    report["worker"] = w = worker_check(renderer, model, base, shards)
    print(
        f"end to end ({w['shards']} shards, {w['images']} images, batch {renderer.batch_size}): renderer alone "
        f"{w['renderer_alone_images_per_s']:.2f} img/s, shard worker {w['worker_images_per_s']:.2f} "
        f"img/s -> worker/renderer {w['worker_over_renderer']:.3f}, steady (first to last commit) "
        f"{w['steady_worker_over_renderer']}; rendering inside the worker took "
        f"{w['render_time_in_worker_over_alone']}x the time alone; publish s {w['publish_s']}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="hub id or folder; default: a pipeline built offline now")
    parser.add_argument(
        "--sd15-shaped", action="store_true", help="build SD 1.5's architecture (random weights)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="width fraction of the SD1.5-shaped build")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--scheduler", default=None, help="a diffusers scheduler class name")
    parser.add_argument(
        "--settings",
        default="eager:4",
        help=f"comma-separated MODE:BATCH, e.g. eager:8,compile-cl:32; modes: {', '.join(MODES)}",
    )
    parser.add_argument("--pairs", type=int, default=6, help="timed (bare, renderer) batch pairs per setting")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--identity-noise-share", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave as is)")
    parser.add_argument("--worker", action="store_true", help="end to end: shard worker vs renderer alone")
    parser.add_argument("--worker-shards", type=int, default=2)
    parser.add_argument(
        "--worker-after", help="MODE:BATCH of the setting to run the worker check after (default: last)"
    )
    parser.add_argument("--probe", action="store_true", help="run the batch_size: auto probe")
    parser.add_argument("--max-batch-size", type=int, default=64, help="the largest batch the probe tries")
    parser.add_argument("--check-fp16", action="store_true", help="last: render one batch in fp16 (finite?)")
    parser.add_argument("--json", help="write every figure to this file (rewritten after each setting)")
    args = parser.parse_args()

    import diffusers
    import torch
    import transformers

    # The SD1.5-shaped build's word-list tokenizer truncates long prompts: a warning per batch otherwise.
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    report: dict = {"settings": []}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None and args.sd15_shaped:
            from dppp.pipeline.renderers.sd15_shaped import build_sd15_shaped

            half = "bf16" if args.dtype == "bf16" else "fp16"
            built_s = clock(lambda: build_sd15_shaped(Path(tmp) / "sd15", scale=args.scale, dtype=half))
            model = str(Path(tmp) / "sd15")
            print(f"built the SD1.5-shaped pipeline (scale {args.scale}) in {built_s:.1f}s", flush=True)
        elif model is None:
            from dppp.pipeline.renderers.tiny_diffusion import build_tiny_diffusion

            model = str(build_tiny_diffusion(Path(tmp) / "tiny-diffusion"))
        base = {
            "model": model,
            "height": args.height,
            "width": args.width,
            "steps": args.steps,
            "guidance": args.guidance,
            "dtype": args.dtype,
            "attention": args.attention,
            "identity_noise_share": args.identity_noise_share,
            "threads": args.threads,
            "scheduler": args.scheduler,
        }
        loaded_at = time.perf_counter()
        first = DiffusersRenderer(DiffusersRendererConfig(**base))
        load_s = time.perf_counter() - loaded_at
        pipe, rt = first.pipe, first.runtime
        from dppp.pipeline.renderers.sd15_shaped import parameter_counts

        device = torch.cuda.get_device_name() if rt.device == "cuda" else f"CPU, {os.cpu_count()} cores"
        peaks = {
            "datasheet": datasheet_tflops(device) if rt.device == "cuda" else None,
            "measured": measured_matmul_tflops(rt.torch_dtype),
        }
        flops = flops_per_image(first)
        report.update(
            device=device,
            versions={"diffusers": diffusers.__version__, "torch": torch.__version__},
            model=model if args.model else ("sd15-shaped" if args.sd15_shaped else "tiny offline pipeline"),
            parameters=parameter_counts(pipe),
            size=[args.height, args.width],
            steps=args.steps,
            guidance=args.guidance,
            scheduler=type(pipe.scheduler).__name__,
            dtype=rt.dtype,
            attention=rt.attention,
            load_s=round(load_s, 2),
            flops=flops,
            peak_tflops=peaks,
        )
        print(
            f"device: {device}; dtype {rt.dtype}; attention {rt.attention}; diffusers {diffusers.__version__}, "
            f"torch {torch.__version__}\nmodel: {report['model']} ({type(pipe).__name__}, "
            f"{report['scheduler']}), parameters {report['parameters']}; load {load_s:.1f}s\n"
            f"{args.height}x{args.width}, {args.steps} steps, guidance {args.guidance}: "
            f"{flops['per_image'] / 1e12:.3f} TFLOP per image (UNet x2 {flops['unet_forward_batch2'] / 1e9:.1f} "
            f"GFLOP, decode {flops['vae_decode'] / 1e9:.1f} GFLOP); peak TFLOP/s: datasheet {peaks['datasheet']}, "
            f"measured matmul {peaks['measured'] and round(peaks['measured'], 1)}",
            flush=True,
        )
        save()
        eager_modules = {"unet": pipe.unet, "decoder": pipe.vae.decoder}
        settings = [(mode, int(batch)) for mode, batch in (s.split(":") for s in args.settings.split(","))]
        if unknown := {mode for mode, _ in settings} - set(MODES):
            parser.error(f"unknown mode(s) {sorted(unknown)}; choose from {', '.join(MODES)}")
        views = make_views(max(batch for _, batch in settings) * 2)
        worker_after = tuple(args.worker_after.split(":")) if args.worker_after else None
        last = None
        for mode, batch in settings:
            set_mode(pipe, eager_modules, mode)
            try:
                row = run_setting(pipe, base, mode, batch, views, args, flops["per_image"], peaks)
            except Exception as exc:  # one failing setting (e.g. a compile error) must not cost the others
                report["settings"].append({"mode": mode, "batch": batch, "error": repr(exc)[:2000]})
                save()
                print(f"{mode:>13} b{batch:<3} FAILED: {exc!r}"[:2000], flush=True)
                continue
            last = row.pop("renderer")
            report["settings"].append(row)
            save()
            print_row(row)
            if args.worker and worker_after == (mode, str(batch)):
                run_worker_check(report, last, model, base, args.worker_shards)
                save()
        if args.worker and worker_after is None and last is not None:
            run_worker_check(report, last, model, base, args.worker_shards)
            save()
        if args.probe:
            set_mode(pipe, eager_modules, "eager")
            auto = DiffusersRenderer(
                DiffusersRendererConfig(**base, batch_size="auto", max_batch_size=args.max_batch_size),
                pipeline=pipe,
            )
            started = time.perf_counter()
            result = auto.choose_batch_size()
            probe_s = time.perf_counter() - started
            report["probe"] = {
                "chosen": result.chosen,
                "images_per_s": result.images_per_s,
                "out_of_memory_at": result.out_of_memory_at,
                "seconds": round(probe_s, 1),
            }
            save()
            print(f"batch_size auto: {result.describe()}; probe took {probe_s:.1f}s", flush=True)
        if args.check_fp16 and rt.device == "cuda":
            import numpy as np

            set_mode(pipe, eager_modules, "eager")  # the pipeline is converted in place: this goes last
            half_config = DiffusersRendererConfig(**{**base, "dtype": "fp16", "batch_size": 8})
            rendered = DiffusersRenderer(half_config, pipeline=pipe).render(views[:8])
            report["fp16"] = {
                "attempts_max": max(r.attempts for r in rendered),
                "pixel_std": [round(float(np.asarray(r.image).std()), 2) for r in rendered],
            }
            save()
            print(f"fp16 check: {report['fp16']}", flush=True)


if __name__ == "__main__":
    main()
