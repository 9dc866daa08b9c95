"""Stage-2 model cost: training images/s of each method and phase, and what PDM adds over `bot`.

    .venv/bin/python benchmarks/bench_model.py [--steps 10] [--ids 8] [--views 4] [--threads 1]

Runs every (method, phase) in its own subprocess on the CPU-default tiny CLIP (width 64, 2 layers, patch
16, 256x128 input) with a P x K procedural batch: forward + backward + AdamW step, after 2 warm-up steps.
Reports images/s (wall and per CPU-second, the steadier figure on a shared machine) and the ratio to `bot` (phase 2: the baseline) measured in the same run, peak RSS of each
process (same imports everywhere, so differences are the model's), and parameter counts of the PDM
additions, both on the tiny model and at paper scale (CLIP ViT-B/16, 6641 identities), counted on the
meta device so nothing is allocated.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402

RUNS = [("bot", 2), ("clipreid", 1), ("clipreid", 2), ("pdm", 1), ("pdm", 2)]
STYLE_VOCAB = {"illumination": 9, "weather": 5, "camid": 10}  # the shipped taxonomy's sizes


def worker(method: str, phase: int, steps: int, ids: int, views: int, threads: int) -> dict:
    import torch

    from dppp.trainer.methods.config import ModelConfig
    from dppp.trainer.methods.model import build_model
    from tests.helpers.toy_batch import toy_batch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = toy_batch(ids, views, size=(256, 128))
    batch["style"] = {name: values % STYLE_VOCAB[name] for name, values in batch["style"].items()}
    model = build_model(ModelConfig(method=method), ids, STYLE_VOCAB).train()
    model.set_phase(phase)
    if method == "pdm" and phase == 2:
        model.build_identity_bank([batch])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)

    def step():
        total, _ = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def run_steps():
        for _ in range(steps):
            step()

    for _ in range(2):  # warm-up steps, untimed
        step()
    _, seconds, cpu_seconds = timed(run_steps)
    return {
        "images_per_s": steps * ids * views / seconds,
        "images_per_cpu_s": steps * ids * views / cpu_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.trainable_parameters()),
    }


def paper_scale_parameters(num_classes: int = 6641) -> dict[str, int]:
    """Parameter counts of each method on CLIP ViT-B/16 at 256x128, built on the meta device."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from dppp.prompts.tiny_tokenizer import build_tiny_clip_tokenizer
    from dppp.trainer.clip.backbone import ClipBackbone
    from dppp.trainer.methods.config import ModelConfig
    from dppp.trainer.methods.registry import method_spec

    counts = {}
    for method in ("bot", "clipreid", "pdm"):
        config = ModelConfig(method=method)
        # ViT-B/16 dims; the real tokenizer's 49408-token vocab.
        clip_config = CLIPConfig(
            text_config=dict(
                vocab_size=49408,
                hidden_size=512,
                intermediate_size=2048,
                num_attention_heads=8,
                num_hidden_layers=12,
                max_position_embeddings=77,
            ),
            vision_config=dict(
                hidden_size=768,
                intermediate_size=3072,
                num_attention_heads=12,
                num_hidden_layers=12,
                image_size=224,
                patch_size=16,
            ),
            projection_dim=512,
        )
        with torch.device("meta"):
            clip = CLIPModel(clip_config)
        # The backbone and PDM read two values as numbers (the learned temperature, the mean norm of the
        # word embeddings), which meta tensors cannot give: those two are real, same shapes, same count.
        clip.logit_scale = torch.nn.Parameter(torch.tensor(clip_config.logit_scale_init_value))
        words = clip.text_model.embeddings.token_embedding
        clip.text_model.embeddings.token_embedding = torch.nn.Embedding(
            words.num_embeddings, words.embedding_dim
        )
        with torch.device("meta"):
            model_class = method_spec(method).model_class()
            tokenizer = build_tiny_clip_tokenizer(model_max_length=77)
            backbone = ClipBackbone(clip, tokenizer, config.image_size, model_class.prompt_tokens(config))
            model = model_class(config, num_classes, STYLE_VOCAB, backbone)
        counts[method] = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ids", type=int, default=8)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PHASE"))
    args = parser.parse_args()
    if args.worker:
        method, phase = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(method, phase, args.steps, args.ids, args.views, args.threads)))
        return

    print(
        f"tiny CLIP (width 64, 2 layers, patch 16), 256x128, batch {args.ids}x{args.views}, "
        f"{args.steps} steps, {args.threads} thread(s)"
    )
    results = {}
    for method, phase in RUNS:
        command = [
            sys.executable,
            __file__,
            "--worker",
            method,
            str(phase),
            "--steps",
            str(args.steps),
            "--ids",
            str(args.ids),
            "--views",
            str(args.views),
            "--threads",
            str(args.threads),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[(method, phase)] = json.loads(output.strip().splitlines()[-1])
    base = results[("bot", 2)]
    print(
        f"{'method':10} {'phase':>5} {'images/s':>9} {'vs bot':>7} {'img/CPU-s':>10} {'vs bot':>7} "
        f"{'peak RSS MiB':>13} {'vs bot':>8} {'params':>9} {'trainable':>10}"
    )
    for (method, phase), r in results.items():
        print(
            f"{method:10} {phase:>5} {r['images_per_s']:9.1f} {r['images_per_s'] / base['images_per_s']:6.2f}x "
            f"{r['images_per_cpu_s']:10.1f} {r['images_per_cpu_s'] / base['images_per_cpu_s']:6.2f}x "
            f"{r['peak_rss_mib']:13.0f} {r['peak_rss_mib'] - base['peak_rss_mib']:+8.0f} "
            f"{r['params']:9d} {r['trainable']:10d}"
        )
    tiny_added = results[("pdm", 2)]["params"] - base["params"]
    print(
        f"PDM additions on the tiny model: {tiny_added} parameters "
        f"({100 * tiny_added / base['params']:.1f}% of bot's {base['params']})"
    )
    paper = paper_scale_parameters()
    for method in ("clipreid", "pdm"):
        added = paper[method] - paper["bot"]
        print(
            f"{method} additions at paper scale (ViT-B/16, 6641 ids): {added / 1e6:.2f} M parameters and "
            f"buffers ({100 * added / paper['bot']:.2f}% of bot's {paper['bot'] / 1e6:.1f} M), "
            f"{added * 4 / 2**20:.1f} MiB in fp32"
        )


if __name__ == "__main__":
    main()
