"""Streaming P x K loader throughput against two baselines measured in the same run, on the same shards.

    .venv/bin/python benchmarks/bench_loader.py --data runs/demo/dataset [--size 128 64] [--epochs 2]
        [--json OUT.json] [--gpu-decode]

1. decode-only bound: as many processes as the loader has stream every shard and decode + resize every
   image (the floor of the work any loader must do): no augmentation, sampling or batching;
2. the dppp loader (trainer.data.streams.PKBatchStream in a torch DataLoader) with 1 and 2 loader processes,
   full training augmentation, exact P x K batches;
3. a stock torch DataLoader over the same images written out as a folder of JPEG files (map-style
   dataset, random sampler, the same augmentation and batch size), 1 and 2 processes.

Printed: samples/s of each and the ratios dppp/decode-only (aim >= 0.85) and dppp/folder (aim >= 1.0);
`--json OUT` writes them as {"processes": {"1": {"dppp_per_decode_only": r, ...}, "2": {...}}}.
`--gpu-decode` (a CUDA machine with torchvision) adds the JPEG decode on the GPU (nvjpeg through
torchvision.io.decode_jpeg, batched), against the CPU decode of the same images, as an option to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402

REPEATS = 3  # best of 3: the machine is shared, and interference only ever adds time


def _decode_units(job) -> int:
    data, size, unit_ids = job
    from dppp.dataset.shard_reader import read_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.trainer.data.transforms import EvalTransform

    torch.set_num_threads(1)
    transform, n = EvalTransform(size), 0
    for u in unit_ids:
        unit = data.units[u]
        with open_storage(unit.root, data.storage).open_read(unit.tar) as stream:
            for sample in read_shard(stream, include={"jpg"}):
                transform(sample["jpg"])
                n += 1
    return n


def decode_only(data, size, processes: int) -> float:
    """Every image of every shard streamed, decoded and resized by `processes` processes (shards dealt
    round robin): the work any loader must do, without augmentation, sampling or batching."""
    import multiprocessing

    jobs = [(data, size, list(range(p, len(data.units), processes))) for p in range(processes)]

    def decode_all() -> int:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            return sum(pool.map(_decode_units, jobs))

    n, wall_s, _ = timed(decode_all, REPEATS, statistic="best")
    return n / wall_s


def dppp_loader(data, config, size, epochs: int) -> tuple[float, int]:
    """As the training loop feeds itself: one set of loader processes persisting across the epochs."""
    from dppp.trainer.data.loader import epoch_batches
    from dppp.trainer.data.streams import PKBatchStream

    def make_stream(epoch: int) -> PKBatchStream:  # phase 2: pids only, as the folder
        return PKBatchStream(data, config, size, seed=0, epoch=epoch)

    def load_all() -> int:
        n = 0
        for _stream, batches in epoch_batches(make_stream, range(epochs), config):
            for batch in batches:
                n += len(batch["pids"])
        return n

    n, wall_s, _ = timed(load_all, REPEATS, statistic="best")
    return n / wall_s, n


def per_epoch_loader(data, config, size, epochs: int) -> float:
    """The loader before issue 25, as a baseline in the same run: one DataLoader (fresh processes) per
    epoch, the next epoch's started once the current epoch's first batch is in."""
    from dppp.trainer.data.loader import make_loader
    from dppp.trainer.data.streams import PKBatchStream

    def load_all() -> int:
        n = 0
        upcoming = iter(make_loader(PKBatchStream(data, config, size, seed=0, epoch=0), config))
        for epoch in range(epochs):
            current, upcoming = upcoming, None
            for index, batch in enumerate(current):
                if index == 0 and epoch + 1 < epochs:
                    upcoming = iter(
                        make_loader(PKBatchStream(data, config, size, seed=0, epoch=epoch + 1), config)
                    )
                n += len(batch["pids"])
        return n

    n, wall_s, _ = timed(load_all, REPEATS, statistic="best")
    return n / wall_s


class FolderDataset(torch.utils.data.Dataset):
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        with open(self.paths[index], "rb") as handle:
            return self.transform(handle.read(), rng), self.labels[index]


def folder_loader(data, config, size, samples: int) -> float:
    from dppp.dataset.shard_reader import read_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.trainer.data.transforms import ReidAugment

    with tempfile.TemporaryDirectory() as folder:
        paths, labels = [], []
        for unit in data.units:
            storage = open_storage(unit.root, data.storage)
            label_of = {m: i.label for i in unit.identities for m in i.members}
            with storage.open_read(unit.tar) as stream:
                for sample in read_shard(stream, include={"jpg"}):
                    path = Path(folder) / f"{sample['__key__']}.jpg"
                    path.write_bytes(sample["jpg"])
                    paths.append(str(path))
                    labels.append(label_of[sample["__key__"]])
        dataset = FolderDataset(paths, labels, ReidAugment(config.augment, size))
        batch = config.ids_per_batch * config.images_per_id
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=config.num_workers,
            prefetch_factor=config.prefetch_batches if config.num_workers else None,
            persistent_workers=config.num_workers > 0,  # its best case: no start-up between epochs
            multiprocessing_context="fork" if config.num_workers else None,
        )

        def load_samples() -> int:
            n = 0
            while n < samples:
                for images, _ in loader:
                    n += len(images)
                    if n >= samples:
                        break
            return n

        n, wall_s, _ = timed(load_samples, REPEATS, statistic="best")
        return n / wall_s


def gpu_decode(data, size) -> dict:
    """JPEG decode + resize of every image on the GPU (nvjpeg through torchvision, in batches of 64)
    against the CPU path the loader uses (EvalTransform: libjpeg DCT scaling), same images, same run.
    An option to measure, not the loader's path: it moves the decode onto the GPU the step runs on."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    try:
        import torchvision.io
        import torchvision.transforms.v2.functional as tvf
    except ImportError:
        return {"skipped": "torchvision is not installed"}
    from dppp.dataset.shard_reader import read_shard
    from dppp.foundation.storage.urls import open_storage
    from dppp.trainer.data.transforms import EvalTransform

    encoded = []
    for unit in data.units:
        with open_storage(unit.root, data.storage).open_read(unit.tar) as stream:
            encoded += [s["jpg"] for s in read_shard(stream, include={"jpg"})]
    transform = EvalTransform(size)

    def cpu() -> int:
        for jpeg in encoded:
            transform(jpeg)
        return len(encoded)

    tensors = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in encoded]

    def gpu() -> int:
        for start in range(0, len(tensors), 64):
            images = torchvision.io.decode_jpeg(tensors[start : start + 64], device="cuda")
            torch.stack([tvf.resize(i, list(size), antialias=True) for i in images])
        torch.cuda.synchronize()
        return len(tensors)

    gpu()  # warm-up: nvjpeg handles, CUDA context
    n, cpu_s, _ = timed(cpu, REPEATS, statistic="best")
    n, gpu_s, _ = timed(gpu, REPEATS, statistic="best")
    return {
        "images": n,
        "cpu_1_process_per_s": n / cpu_s,
        "gpu_per_s": n / gpu_s,
        "gpu_per_cpu": cpu_s / gpu_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/demo/dataset")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--ids-per-batch", type=int, default=16)
    parser.add_argument("--images-per-id", type=int, default=4)
    parser.add_argument("--json", dest="json_out", help="also write the figures here as JSON")
    parser.add_argument("--processes", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--gpu-decode", action="store_true", help="measure nvjpeg decoding (CUDA only)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also the loader before issue 25 (a DataLoader per epoch) in the same run",
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each")
    args = parser.parse_args()
    torch.set_num_threads(1)
    global REPEATS
    REPEATS = args.repeats

    from dppp.trainer.data.config import DataConfig
    from dppp.trainer.data.sources import open_training_data

    data = open_training_data([args.data])
    size = tuple(args.size)
    print(
        f"data: {args.data}: {data.describe()}; input {size[0]}x{size[1]}; "
        f"P={args.ids_per_batch} K={args.images_per_id}; {os.cpu_count()} CPU(s)"
    )
    rows = []
    for workers in args.processes:
        config = DataConfig(
            ids_per_batch=args.ids_per_batch, images_per_id=args.images_per_id, num_workers=workers
        )
        dppp_rate, samples = dppp_loader(data, config, size, args.epochs)
        bound = decode_only(data, size, workers)
        folder = folder_loader(data, config, size, samples)
        before = per_epoch_loader(data, config, size, args.epochs) if workers and args.baseline else None
        rows.append((workers, samples, bound, dppp_rate, folder, before))
    print(
        f"{'loader procs':>12} {'samples':>8} {'decode-only/s':>14} {'dppp/s':>8} {'folder/s':>9} "
        f"{'dppp/decode':>12} {'dppp/folder':>12} {'per-epoch/decode':>17}"
    )
    for workers, samples, bound, dppp_rate, folder, before in rows:
        print(
            f"{workers:>12} {samples:>8} {bound:>14.0f} {dppp_rate:>8.0f} {folder:>9.0f} "
            f"{dppp_rate / bound:>12.2f} {dppp_rate / folder:>12.2f} "
            f"{(before / bound if before else float('nan')):>17.2f}"
        )
    report = {
        "data": args.data,
        "size": list(size),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "processes": {
            str(workers): {
                "samples": samples,
                "decode_only_per_s": bound,
                "dppp_per_s": dppp_rate,
                "folder_per_s": folder,
                "dppp_per_decode_only": dppp_rate / bound,
                "dppp_per_folder": dppp_rate / folder,
                "per_epoch_loaders_per_s": before,
                "per_epoch_loaders_per_decode_only": before / bound if before else None,
            }
            for workers, samples, bound, dppp_rate, folder, before in rows
        },
    }
    if args.gpu_decode:
        report["gpu_decode"] = gpu_decode(data, size)
        print(json.dumps({"gpu_decode": report["gpu_decode"]}))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
