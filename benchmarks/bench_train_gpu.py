"""Stage 2 at paper scale on one GPU: PDM phase-1 and phase-2 steps on the CLIP ViT-B/16 shape.

    python benchmarks/bench_train_gpu.py --data DATASET [--make-data 512] [--backbone DIR] [--json OUT]
        [--attention sdpa,eager] [--compile] [--fused] [--loader-processes 6] [--steps 30]
    python benchmarks/bench_train_gpu.py --tiny --data runs/demo/dataset      # the same path on a CPU

One process plays one Ray Train worker with the training loop's own pieces: `build_model`, the phase's
parameter groups and AdamW, `optimizer_step` (autocast bf16 on CUDA), batches from `PKBatchStream`. At
256x128, P x K = 16 x 4 (the geneperson config), for each phase and attention kernel:

- in-memory: the step fed by batches already on the GPU (the loader-free bound), images/s;
- streaming: the same step fed by the streaming loader (`epoch_batches`: persistent loader processes,
  pinned memory), images/s and its ratio to in-memory (aim >= 0.95);
- FLOPs of one step counted by torch.utils.flop_counter (forward + backward), TFLOP/s achieved and its
  fraction of the card's bf16 datasheet peak and of a large matmul measured in the same run (aim >= 0.40);
- peak GPU memory; the loader processes' CPU seconds per step over the step's wall time: the loader
  cores one GPU needs (`data.num_workers` must be at least that).

Options measured as settings: `--attention sdpa,eager`, `--compile` (torch.compile of the loss module),
`--fused` (AdamW's fused CUDA kernel). `--backbone` defaults to a ViT-B/16-shaped CLIP with random weights
built into a temp folder (`dppp models clip-vit-b16-shaped`): GPU cost does not depend on weight values.
`--tiny` runs the same code on the tiny CLIP at 64x32, P x K = 4 x 2, for a CPU check that the script
works; its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASHEET_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "patch_size": 8, "projection_dim": 32}


def train_config(args):
    from dppp.trainer.training.config import TrainConfig

    model = {"method": "pdm", "backbone": args.backbone, "image_size": [256, 128]}
    data = {"ids_per_batch": args.pk[0], "images_per_id": args.pk[1], "num_workers": args.loader_processes}
    if args.tiny:
        model.update(backbone="tiny", image_size=[64, 32], tiny=TINY, inversion_hidden_dim=32)
        data.update(ids_per_batch=4, images_per_id=2, pool_identities=4)
    model["style_attributes"] = args.style
    return TrainConfig.model_validate({"model": model, "data": data, "mixed_precision": "bf16"})


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measured_matmul_tflops() -> float | None:
    """A large bf16 matrix product's rate in this run: the ceiling the card reaches on random data."""
    if not torch.cuda.is_available():
        return None
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize()
    started = time.perf_counter()
    for _ in range(20):
        a @ b
    synchronize()
    return 2 * n**3 * 20 / (time.perf_counter() - started) / 1e12


def set_attention(model, kind: str) -> None:
    """transformers picks the attention kernel per forward from the config: sdpa or eager."""
    clip = model.backbone.clip
    if hasattr(clip, "set_attn_implementation"):
        clip.set_attn_implementation(kind)
        return
    for module in clip.modules():
        config = getattr(module, "config", None)
        if config is not None:
            config._attn_implementation = kind


def build_phase(config, data, phase: int, device, *, fused: bool):
    """The model in `phase` (phase 2 with a random identity bank: any values cost the same) and the
    phase's AdamW, as the training loop builds them."""
    from dppp.trainer.methods.model import build_model

    torch.manual_seed(0)
    model = build_model(config.model, data.num_classes, data.style_vocab).to(device)
    if phase == 2:
        model.set_identity_bank(
            torch.randn(model.num_classes, model.identity_text.shape[1], device=device),
            torch.ones(model.num_classes, dtype=torch.long, device=device),
        )
        if hasattr(model, "set_identity_words"):  # PDM's content words
            model.set_identity_words(
                torch.randn(model.num_classes, model.backbone.token_dim, device=device),
                torch.ones(model.num_classes, dtype=torch.long, device=device),
            )
    model.set_phase(phase)
    model.train()
    schedule = config.phase1 if phase == 1 else config.phase2
    groups = model.parameter_groups(schedule.weight_decay)
    options = {"fused": True} if fused and device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr, weight_decay=schedule.weight_decay, **options)
    return model, optimizer


def step_flops(wrapped, optimizer, scaler, batch, device, amp) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from dppp.trainer.training.steps import optimizer_step

    with FlopCounterMode(display=False) as counter:
        optimizer_step(wrapped, optimizer, scaler, batch, device, amp)
    return float(counter.get_total_flops())


def timed_steps(wrapped, optimizer, scaler, batches, device, amp, steps: int) -> tuple[float, int]:
    """(wall seconds, steps) of `steps` optimiser steps over the iterable `batches`."""
    from dppp.trainer.training.steps import optimizer_step

    synchronize()
    started, n = time.perf_counter(), 0
    for batch in batches:
        optimizer_step(wrapped, optimizer, scaler, batch, device, amp)
        n += 1
        if n == steps:
            break
    synchronize()
    return time.perf_counter() - started, n


def run_setting(config, data, phase: int, attention: str, compiled: bool, args, device, peaks) -> dict:
    from dppp.trainer.data.loader import epoch_batches, make_loader
    from dppp.trainer.data.streams import PKBatchStream
    from dppp.trainer.training.steps import LossModule, to_device

    cuda = device.type == "cuda"
    amp = torch.bfloat16 if cuda else None
    options = {
        "style_attributes": config.model.style_attributes if phase == 1 else (),
        "augment": phase != 1 or config.phase1.augment,
    }
    size = config.model.image_size

    def make_stream(epoch: int) -> PKBatchStream:
        return PKBatchStream(data, config.data, size, seed=0, epoch=epoch, **options)

    model, optimizer = build_phase(config, data, phase, device, fused=args.fused)
    set_attention(model, attention)
    wrapped = LossModule(model)
    if compiled:
        wrapped = torch.compile(wrapped)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no loss scaling
    # In memory: one epoch's first batches, already on the device.
    resident = []
    for batch in make_loader(make_stream(0), config.data, pin_memory=cuda):
        resident.append({k: to_device(v, device) if k != "keys" else v for k, v in batch.items()})
        if len(resident) == args.steps:
            break
    batch_images = len(resident[0]["pids"])
    flops = step_flops(wrapped, optimizer, scaler, resident[0], device, amp) if not compiled else None
    warm_started = time.perf_counter()
    timed_steps(wrapped, optimizer, scaler, resident[: args.warmup], device, amp, args.warmup)
    warmup_s = time.perf_counter() - warm_started
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    memory_s, steps = timed_steps(wrapped, optimizer, scaler, resident, device, amp, len(resident))
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    del resident
    # Streaming: the same steps, fed as the training loop feeds itself, as many epochs as it takes.
    children = children_cpu_s()

    def streamed():
        for _stream, batches in epoch_batches(make_stream, range(1, 1000), config.data, pin_memory=cuda):
            yield from batches

    feed = streamed()
    # The loader's start (fork, first identity pools) once per run, not per epoch: left out of the rate.
    start_s, _ = timed_steps(wrapped, optimizer, scaler, feed, device, amp, args.warmup)
    stream_s, stream_steps = timed_steps(wrapped, optimizer, scaler, feed, device, amp, steps)
    feed.close()  # its DataLoader shuts its processes down: their CPU time is counted once they exit
    del feed
    loader_cpu_s = children_cpu_s() - children
    memory_rate, stream_rate = steps * batch_images / memory_s, stream_steps * batch_images / stream_s
    row = {
        "phase": phase,
        "attention": attention,
        "compiled": compiled,
        "fused_adamw": bool(args.fused and cuda),
        "batch_images": batch_images,
        "steps": steps,
        "warmup_s": round(warmup_s, 2),
        "in_memory_images_per_s": round(memory_rate, 1),
        "streaming_images_per_s": round(stream_rate, 1),
        "streaming_per_in_memory": round(stream_rate / memory_rate, 3),
        "loader_processes": config.data.num_workers,
        # Loader CPU seconds per second of streamed steps: the cores one GPU's loader keeps busy.
        "loader_cores_per_gpu": round(loader_cpu_s / (start_s + stream_s), 2),
        "loader_start_s": round(start_s, 2),
        "peak_memory_gib": round(peak_gib, 2) if peak_gib is not None else None,
    }
    if flops:
        achieved = flops * steps / memory_s / 1e12
        row.update(
            gflop_per_image=float(f"{flops / batch_images / 1e9:.4g}"),
            tflops=round(achieved, 1),
            fraction_of_datasheet=round(achieved / peaks["datasheet"], 3) if peaks["datasheet"] else None,
            fraction_of_measured_matmul=round(achieved / peaks["measured"], 3) if peaks["measured"] else None,
        )
    return row


def count_only(config, data, phase: int, device) -> dict:
    """FLOPs per image of one optimiser step of `phase` (forward + backward; AdamW's elementwise update
    is not counted), on whatever device: the figure trainer/training/capacity.py scales from."""
    from dppp.trainer.data.loader import make_loader
    from dppp.trainer.data.streams import PKBatchStream
    from dppp.trainer.training.steps import LossModule

    options = {
        "style_attributes": config.model.style_attributes if phase == 1 else (),
        "augment": phase != 1,
    }
    stream = PKBatchStream(data, config.data, config.model.image_size, seed=0, epoch=0, **options)
    batch = next(iter(make_loader(stream, config.data)))
    model, optimizer = build_phase(config, data, phase, device, fused=False)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    flops = step_flops(LossModule(model), optimizer, scaler, batch, device, None)
    return {
        "phase": phase,
        "batch_images": len(batch["pids"]),
        "gflop_per_image": float(f"{flops / len(batch['pids']) / 1e9:.4g}"),
    }


def make_data(folder: str, identities: int) -> str:
    """A procedural dataset at 256x128 (the demo's renderer, 32 identities a shard) written in this
    process by the shard worker, without Ray: a GPU machine needs nothing else to feed the bench."""
    from dppp.dataset.records import DATASET_MANIFEST
    from dppp.pipeline.config import GenerateConfig
    from dppp.pipeline.generate import build_plan, prepare_output
    from dppp.pipeline.worker import ShardWorker

    if (Path(folder) / DATASET_MANIFEST).is_file():
        return folder
    config = GenerateConfig(
        out=folder,
        identities=identities,
        ids_per_shard=32,
        renderer={"kind": "procedural"},
        output={"height": 256, "width": 128, "format": "jpg", "quality": 90},
    )
    plan = build_plan(config)
    prepare_output(plan, overwrite=False)
    worker = ShardWorker(config, name="bench")
    for shard in plan.shards:
        worker.run(shard)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a dppp dataset (labelled with --style attributes)")
    parser.add_argument(
        "--make-data",
        type=int,
        metavar="IDENTITIES",
        help="first write a procedural dataset of this many identities at --data (unless one is there)",
    )
    parser.add_argument("--backbone", help="a CLIP folder (default: a ViT-B/16-shaped one, built here)")
    parser.add_argument("--tiny", action="store_true", help="the tiny CLIP at 64x32: a CPU check")
    parser.add_argument("--phases", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--attention", default="sdpa", help="comma-separated: sdpa, eager")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--fused", action="store_true", help="AdamW's fused CUDA kernel")
    parser.add_argument("--loader-processes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--style", nargs="*", default=["illumination", "weather", "camid"], help="phase-1 style attributes"
    )
    parser.add_argument("--pk", type=int, nargs=2, default=(16, 4), metavar=("P", "K"))
    parser.add_argument(
        "--flops-only",
        action="store_true",
        help="only count each phase's FLOPs per image (one step; works on a CPU, e.g. with --pk 2 2)",
    )
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()

    from dppp.trainer.data.sources import open_training_data

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-train-gpu-") as tmp:
        if not args.tiny and not args.backbone:
            from dppp.trainer.clip.clip_shaped import build_clip_vit_b16_shaped

            args.backbone = str(build_clip_vit_b16_shaped(Path(tmp) / "clip-vit-b16"))
        if args.make_data:
            started = time.perf_counter()
            make_data(args.data, args.make_data)
            print(f"dataset at {args.data} ready in {time.perf_counter() - started:.0f} s", flush=True)
        config = train_config(args)
        data = open_training_data([args.data], config.data.storage)
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        peaks = {
            "datasheet": next((r for k, r in DATASHEET_TFLOPS.items() if k in name), None),
            "measured": measured_matmul_tflops(),
        }
        print(
            f"device {name}; data {args.data}: {data.describe()}; backbone {config.model.backbone} at "
            f"{config.model.image_size[0]}x{config.model.image_size[1]}; P x K = {config.data.ids_per_batch} x "
            f"{config.data.images_per_id}; {config.data.num_workers} loader processes; {os.cpu_count()} CPUs; "
            f"peak TFLOP/s: datasheet {peaks['datasheet']}, measured bf16 matmul {peaks['measured'] and round(peaks['measured'], 1)}",
            flush=True,
        )
        rows = []
        if args.flops_only:
            for phase in args.phases:
                rows.append(count_only(config, data, phase, device))
                print(json.dumps(rows[-1]), flush=True)
            args.phases = ()
        for phase in args.phases:
            for attention in args.attention.split(","):
                for compiled in (False, True) if args.compile else (False,):
                    row = run_setting(config, data, phase, attention, compiled, args, device, peaks)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json_out:
        report = {
            "device": name,
            "cpus": os.cpu_count(),
            "peak_tflops": peaks,
            "settings": vars(args),
            "rows": rows,
        }
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
