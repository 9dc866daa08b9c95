"""Training step time fed by the streaming loader against the same steps fed from tensors in memory.

    .venv/bin/python benchmarks/bench_train_step.py --data runs/demo/dataset [--config configs/demo.yaml]

The model, optimiser and step function are the training loop's own (dppp.trainer.training.steps.optimizer_step,
phase 2 of the configured method, one process as one Ray Train worker runs it). First the epoch's batches
are materialised in memory and the steps timed on them (the loader-free bound); then a fresh model runs
the same steps fed by the streaming DataLoader (decoding and augmentation in its loader processes).
Printed: ms/step of both and their ratio (aim <= 1.1).
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402


def build(config, data):
    from dppp.trainer.methods.model import build_model

    model = build_model(config.model, data.num_classes, data.style_vocab)
    if model.uses_identity_bank:  # phase 2 needs the bank: any values do for timing
        model.set_identity_bank(
            torch.randn(model.num_classes, model.identity_text.shape[1]),
            torch.ones(model.num_classes, dtype=torch.long),
        )
    model.set_phase(2)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.phase2.lr)
    return model, optimizer


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children: the loader processes, once their loader is done."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_steps(model, optimizer, batches, repeats: int = 1) -> tuple[float, float, int]:
    """(wall s per step, this process's CPU s per step, steps), best of `repeats`; `batches` is a list
    or a function giving a fresh iterable for each run."""
    from dppp.trainer.training.steps import LossModule, optimizer_step

    wrapped = LossModule(model)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    device = torch.device("cpu")

    def run_steps(batches) -> int:
        n = 0
        for batch in batches:
            optimizer_step(wrapped, optimizer, scaler, batch, device)
            n += 1
        return n

    fresh = batches if callable(batches) else (lambda: batches)
    n, wall_s, cpu_s = timed(run_steps, repeats, statistic="best", setup=fresh)
    return wall_s / max(n, 1), cpu_s / max(n, 1), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/demo/dataset")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed runs of each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="config override, e.g. train.model.tiny.num_layers=6 (repeatable)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dppp.config import load_experiment
    from dppp.trainer.data.loader import epoch_batches, make_loader
    from dppp.trainer.data.sources import open_training_data
    from dppp.trainer.data.streams import PKBatchStream

    config = load_experiment(args.config, args.sets).train
    data = open_training_data([args.data], config.data.storage)
    size = config.model.image_size

    def streams():
        for epoch in range(args.epochs):
            yield PKBatchStream(data, config.data, size, seed=0, epoch=epoch)

    in_memory = [batch for stream in streams() for batch in make_loader(stream, config.data)]
    batch_images = len(in_memory[0]["pids"])
    print(
        f"data: {args.data}: {data.describe()}; model {config.model.method} on {config.model.backbone} "
        f"at {size[0]}x{size[1]}; batch {batch_images}; {config.data.num_workers} loader process(es); "
        f"{args.threads} torch thread(s)"
    )
    torch.manual_seed(0)
    model, optimizer = build(config, data)
    timed_steps(model, optimizer, in_memory[:2])  # warm-up (allocator, first-call costs)
    memory_s, memory_cpu_s, steps = timed_steps(model, optimizer, in_memory, args.repeats)

    def streamed():  # as the training loop feeds itself: loader processes persist across the epochs
        def make_stream(epoch):
            return PKBatchStream(data, config.data, size, seed=0, epoch=epoch)

        for _stream, batches in epoch_batches(make_stream, range(args.epochs), config.data):
            yield from batches

    torch.manual_seed(0)
    model, optimizer = build(config, data)
    timed_steps(model, optimizer, in_memory[:2])
    children_before = children_cpu_s()
    stream_s, stream_cpu_s, stream_steps = timed_steps(model, optimizer, streamed, args.repeats)
    loader_cpu_s = (children_cpu_s() - children_before) / (stream_steps * args.repeats)
    assert stream_steps == steps
    print(f"{'steps':>6} {'in-memory ms/step':>18} {'streaming ms/step':>18} {'streaming/in-memory':>20}")
    print(f"{steps:>6} {memory_s * 1e3:>18.1f} {stream_s * 1e3:>18.1f} {stream_s / memory_s:>20.3f}")
    # Where a step's time goes: if the loader's CPU per batch is below the step's, a free core hides it.
    print(
        f"CPU ms per step: training process {memory_cpu_s * 1e3:.1f} (in-memory) / {stream_cpu_s * 1e3:.1f} "
        f"(streaming, receiving included); loader processes {loader_cpu_s * 1e3:.1f} per batch"
    )


if __name__ == "__main__":
    main()
