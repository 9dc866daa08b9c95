"""How long a training plan takes on GPUs (`dppp train --dry-run`), from measured figures only.

Each figure names what it rests on. FLOPs per image of PDM's two phases on the CLIP ViT-B/16 shape at
256x128 are counted with torch.utils.flop_counter (benchmarks/bench_train_gpu.py --flops-only: forward +
backward of one optimiser step; phase 1 runs the frozen image encoder forward only, phase 2 trains it).
Rates on a card come from benchmarks/bench_train_gpu.py runs (benchmarks/results/, docs/benchmarks.md);
until one exists for a card, the estimate says so and gives the time at the issue's aim of 40% of the
card's bf16 datasheet peak, which is a target, not a measurement. Another input size is scaled by its
patch count (the encoder's cost is linear in tokens at these sizes; attention adds under 3%).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dppp.trainer.training.config import TrainConfig

VIT_B16 = "CLIP ViT-B/16"
REFERENCE_SIZE = (256, 128)
# bench_train_gpu.py --flops-only --pk 2 2 on the ViT-B/16-shaped CLIP at 256x128 (CPU, fp32 autograd).
GFLOP_PER_IMAGE = {1: 24.79, 2: 66.04}
H100_BF16_DENSE_TFLOPS = 989.0  # datasheet, dense (the H200's is the same)
AIM_FRACTION = 0.40
# The streaming loader, one process, 256x128 JPEGs to a 128x64 input with full augmentation: 1,763-1,780
# samples/s on the 2-core CPU VM (docs/benchmarks.md, "training loader"). A 256x128 input decodes at full
# size (no DCT downscaling), so per process it is slower than this: the loader bound below is optimistic.
LOADER_IMAGES_PER_PROCESS_S = 1770.0


@dataclass(frozen=True)
class MeasuredTrainRate:
    card: str
    phase: int
    images_per_s: float  # one GPU, P x K = 16 x 4 at 256x128, bf16, fed by the streaming loader
    setting: str
    source: str


# Filled from benchmarks/results/ once bench_train_gpu.py has run on a GPU (GPU measurement pending).
MEASURED: tuple[MeasuredTrainRate, ...] = ()


@dataclass(frozen=True)
class TrainEstimate:
    hours_per_phase: dict[int, float]  # wall hours of each phase with the plan's workers
    workers: int
    basis: str

    @property
    def hours(self) -> float:
        return sum(self.hours_per_phase.values())

    def describe(self) -> str:
        phases = ", ".join(f"phase {p} {duration(h)}" for p, h in sorted(self.hours_per_phase.items()))
        return (
            f"expected training time: {duration(self.hours)} on {self.workers} GPU(s) ({phases}), "
            f"{self.hours * self.workers:.1f} GPU-hours; {self.basis}"
        )


def duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.0f} min" if hours * 60 >= 1 else "under a minute"


def is_vit_b16(backbone: str) -> bool:
    """The hub id of CLIP ViT-B/16, or a local CLIP folder of its shape (`dppp models clip-vit-b16-shaped`)."""
    if backbone.rstrip("/").endswith("clip-vit-base-patch16"):
        return True
    config = Path(backbone).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        vision = json.loads(config.read_text()).get("vision_config") or {}
    except (OSError, ValueError):
        return False
    return (vision.get("hidden_size"), vision.get("num_hidden_layers"), vision.get("patch_size")) == (
        768,
        12,
        16,
    )


def estimate_train_hours(config: TrainConfig, plan) -> TrainEstimate | None:
    """Wall hours of `plan` (trainer/training/plan.py) on `config.workers` GPUs; None where nothing
    measured applies (a CPU run, or a backbone whose cost was not counted)."""
    if not config.use_gpu or not is_vit_b16(config.model.backbone) or not all(GFLOP_PER_IMAGE.values()):
        return None
    height, width = config.model.image_size
    scale = (height // 16) * (width // 16) / ((REFERENCE_SIZE[0] // 16) * (REFERENCE_SIZE[1] // 16))
    hours, bases = {}, []
    for phase in plan.phases:
        measured = next((r for r in MEASURED if r.phase == phase.phase), None)
        if measured is not None:
            rate = measured.images_per_s / scale
            bases.append(
                f"phase {phase.phase} at {rate:.0f} images/s per GPU measured on one {measured.card} "
                f"({measured.setting}; {measured.source})"
            )
        else:
            flops = GFLOP_PER_IMAGE[phase.phase] * 1e9 * scale
            rate = AIM_FRACTION * H100_BF16_DENSE_TFLOPS * 1e12 / flops
            bases.append(
                f"phase {phase.phase}: no rate measured yet (benchmarks/bench_train_gpu.py measures it), "
                f"so at the aim of {AIM_FRACTION:.0%} of an H100's bf16 peak ({H100_BF16_DENSE_TFLOPS:g} "
                f"TFLOP/s) for {GFLOP_PER_IMAGE[phase.phase] * scale:.1f} GFLOP per image, {rate:.0f} images/s"
            )
        loader = LOADER_IMAGES_PER_PROCESS_S * max(1, config.data.num_workers)
        if loader < rate:
            bases.append(
                f"phase {phase.phase}'s GPU step would take {rate:.0f} images/s, more than "
                f"{max(1, config.data.num_workers)} loader processes deliver (about {loader:.0f} at "
                f"{LOADER_IMAGES_PER_PROCESS_S:g} each, measured on a CPU VM at 128x64): the loader sets "
                f"the pace; {rate / LOADER_IMAGES_PER_PROCESS_S:.0f} processes (and cores) per GPU would "
                "keep up"
            )
            rate = loader
        hours[phase.phase] = phase.images_per_worker / rate / 3600
    basis = "; ".join(bases) + f" ({VIT_B16} at {height}x{width}; FLOPs counted by bench_train_gpu.py)"
    return TrainEstimate(hours, config.workers, basis)
