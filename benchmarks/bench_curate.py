"""Curation: are planted defects caught, at what cost in clean images, how fast, and does Re-ID gain?

    .venv/bin/python benchmarks/bench_curate.py [--work DIR] [--identities 64] [--share 0.10]
        [--data-seed 0] [--plant-seed 0] [--workers 2] [--seeds 3] [--first-seed 0] [--methods bot pdm]
        [--phase1-epochs 3] [--phase2-epochs 6] [--skip-reid] [--clean-reference] [--arms off auto clean]
        [--json OUT] [--dry-run]

1. Data: a demo-like training set (configs/demo.yaml's generate section: procedural, 256x128, Poisson
   10 views; `--identities` people, `--data-seed`) and a source-test set of other people (seed 1000, 32
   identities, the same styles), both by `dppp generate`'s job.
2. Detection: a copy of the training set with `--share` of its images replaced by planted defects
   (benchmarks/curation_defects.py: blank, noise, swapped identity, two figures, cropped, in turn), then
   `dppp curate`'s job (trainer.curation.job.run_curate) with the default `curate:` section. Per kind: the
   share rejected; the share of clean images rejected; throughput (images/s of the whole job, and per
   actor busy second).
3. Re-ID effect: bot and PDM trained on the corrupted set with curation off (every planted image trained
   on) and auto (curation.parquet honoured), the same training seed in both arms (paired), tested on the
   source-test set (Market-1501 protocol, cosine): mAP per run, and the per-seed difference curated -
   corrupted with a 95% t interval; with --clean-reference also trained on the clean set (what curation
   could at best recover). The training recipe is the domain-generalization benchmark's (models/
   tiny-clip, 128x64, P x K = 8 x 4, its phase-2 learning rates), cut to `--phase1-epochs` and
   `--phase2-epochs` so that the whole benchmark fits a 2-core machine.

`--dry-run` prints the plan, the expected time of the curate job on CPU (measured rate) and on GPU
(estimated), and writes nothing. Results: tables on stdout; `--json OUT` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEST_SEED, TEST_IDENTITIES = 1000, 32


def generate(out: Path, seed: int, identities: int, workers: int) -> str:
    from dppp.config import load_experiment
    from dppp.pipeline.generate import run_generate

    sets = [f"generate.out={out}", f"generate.seed={seed}", f"generate.identities={identities}"]
    config = load_experiment(ROOT / "configs" / "demo.yaml", [*sets, f"generate.workers={workers}"]).generate
    run_generate(config, progress=False)
    return str(out)


def detection(corrupted: Path, planted: dict[str, str], workers: int) -> dict[str, Any]:
    """Run the curate job on the corrupted copy; per planted kind the share rejected, and the clean share."""
    import pyarrow.parquet as pq

    from benchmarks.curation_defects import KINDS
    from dppp.trainer.curation.config import CurateConfig
    from dppp.trainer.curation.job import run_curate

    config = CurateConfig(model=str(ROOT / "models" / "tiny-clip"), workers=workers)
    summary = run_curate(str(corrupted), config, progress=False)
    rows = pq.read_table(corrupted / "curation.parquet", columns=["key", "keep", "reason"]).to_pylist()
    kinds: dict[str, dict[str, Any]] = {}
    for kind in (*KINDS, "clean"):
        mine = [r for r in rows if planted.get(r["key"], "clean") == kind]
        reasons: dict[str, int] = {}
        for r in mine:
            if not r["keep"]:
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        kinds[kind] = {
            "images": len(mine),
            "rejected": sum(reasons.values()),
            "share_rejected": sum(reasons.values()) / max(len(mine), 1),
            "reasons": reasons,
        }
    planted_rejected = sum(kinds[k]["rejected"] for k in KINDS)
    return {
        "kinds": kinds,
        "planted": len(planted),
        "planted_share_rejected": planted_rejected / max(len(planted), 1),
        "clean_share_rejected": kinds["clean"]["share_rejected"],
        "images": summary.counts.samples,
        "wall_s": summary.wall_s,
        "images_per_s": summary.counts.samples / summary.wall_s,
        "images_per_busy_s": summary.images / summary.busy_s if summary.busy_s else None,
        "busy_s": summary.busy_s,
        "clip_s": summary.clip_s,
        # One GPU actor: the CLIP's forward moves to the GPU (a tiny CLIP's batch of 64 takes milliseconds
        # there), reading, decoding and the pixel signals stay on the actor's CPU core: they bound it.
        "gpu_images_per_s_estimate": summary.images / (summary.busy_s - summary.clip_s)
        if summary.busy_s > summary.clip_s
        else None,
        "workers": summary.workers,
    }


def train_and_test(
    data: str, test: str, method: str, seed: int, curation: str, args, work: Path, arm: str
) -> float:
    """source-test mAP (%) of one run."""
    from benchmarks.bench_domain_generalization import Size, Variant, evaluate, train_config
    from dppp.trainer.training.train import run_train

    size = Size(
        train_ids=args.identities,
        source_test_ids=TEST_IDENTITIES,
        target_test_ids=0,
        views=10,
        image=(128, 64),
        phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs,
        ids_per_batch=8,
        images_per_id=4,
        hidden=128,
    )
    backbone = str(ROOT / "models" / "tiny-clip")
    config = train_config(Variant(method, method, "pretrained"), size, work / "runs", backbone, seed, [])
    data_config = config.data.model_copy(update={"curation": curation})
    config = config.model_copy(update={"data": data_config, "run_name": f"{method}-{arm}-s{seed}"})
    result = run_train(config, [data], progress=False)
    return evaluate(result.final_url, {"source-test": test})["source-test"]["mAP"]


def reid(corrupted: str, clean: str, test: str, args, work: Path) -> dict[str, Any]:
    """Per seed and method: the corrupted set with curation off, then auto; with --clean-reference also
    the clean set (the ceiling curation can reach)."""
    from benchmarks.bench_domain_generalization import paired

    arms = [("off", corrupted, "off"), ("auto", corrupted, "auto")]
    if args.clean_reference:
        arms.append(("clean", clean, "off"))
    runs: dict[str, dict[str, list[float]]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for method in args.methods:
            for arm, data, curation in arms:
                if arm not in args.arms:
                    continue
                started = time.perf_counter()
                value = train_and_test(data, test, method, seed, curation, args, work, arm)
                runs.setdefault(method, {}).setdefault(arm, []).append(value)
                print(
                    f"  {method} seed {seed} {arm}: source-test mAP {value:.1f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    out = {}
    for method, by_arm in runs.items():
        row: dict[str, Any] = {f"{arm}_mAP": values for arm, values in by_arm.items()}
        if "off" in by_arm and "auto" in by_arm:
            row["curated_minus_corrupted"] = paired(by_arm["auto"], by_arm["off"])
        if "clean" in by_arm and "auto" in by_arm:
            row["clean_minus_curated"] = paired(by_arm["clean"], by_arm["auto"])
        out[method] = row
    return out


def report(result: dict[str, Any]) -> str:
    d = result["detection"]
    lines = [
        f"detection: {d['planted']} planted of {d['images']} images ({100 * result['share']:.0f}%), "
        f"data seed {result['data_seed']}, planting seed {result['plant_seed']}",
        f"{'kind':<12} {'images':>6} {'rejected':>8} {'share':>7}  reasons",
    ]
    for kind, k in d["kinds"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(k["reasons"].items()))
        lines.append(
            f"{kind:<12} {k['images']:>6} {k['rejected']:>8} {100 * k['share_rejected']:>6.1f}%  {reasons}"
        )
    lines.append(
        f"planted rejected {100 * d['planted_share_rejected']:.1f}%, clean rejected "
        f"{100 * d['clean_share_rejected']:.1f}%"
    )
    per_busy = d["images_per_busy_s"]
    lines.append(
        f"throughput: {d['images_per_s']:.1f} images/s for the whole job ({d['workers']} CPU actor(s), "
        f"{d['wall_s']:.1f} s with Ray start and model loads), "
        + (f"{per_busy:.1f} images/s per busy actor" if per_busy else "")
        + (
            f" ({100 * d['clip_s'] / d['busy_s']:.0f}% of it in the CLIP); one GPU actor, estimated: "
            f"{d['gpu_images_per_s_estimate']:.0f} images/s (the CPU part alone)"
            if d.get("gpu_images_per_s_estimate")
            else ""
        )
    )
    names = {"off": "corrupted", "auto": "curated", "clean": "clean"}
    for method, r in result.get("reid", {}).items():
        means = ", ".join(f"{names[arm]} {_mean(r[f'{arm}_mAP']):.1f}" for arm in names if f"{arm}_mAP" in r)
        lines.append(f"{method}: source-test mAP {means}")
        for key, label in (
            ("curated_minus_corrupted", "curated - corrupted"),
            ("clean_minus_curated", "clean - curated"),
        ):
            if key in r:
                p = r[key]
                ci = p["ci95"]
                ci_text = f"[{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci[0] is not None else "(one seed: no interval)"
                lines.append(f"  {label}: {p['mean']:+.1f} pts, 95% CI {ci_text}, n={p['n']} paired seeds")
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_curate")
    parser.add_argument("--identities", type=int, default=64)
    parser.add_argument("--share", type=float, default=0.10)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--plant-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="training seeds first..first+seeds-1")
    parser.add_argument("--methods", nargs="+", default=["bot", "pdm"], choices=["bot", "clipreid", "pdm"])
    parser.add_argument("--phase1-epochs", type=int, default=3)
    parser.add_argument("--phase2-epochs", type=int, default=6)
    parser.add_argument("--skip-reid", action="store_true")
    parser.add_argument(
        "--clean-reference", action="store_true", help="also train on the clean set (the ceiling)"
    )
    parser.add_argument(
        "--arms", nargs="+", default=["off", "auto", "clean"], help="which arms to run (e.g. only clean)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    if args.dry_run:
        from dppp.trainer.curation.job import CPU_IMAGES_PER_S_PER_WORKER, GPU_IMAGES_PER_S_PER_WORKER

        images = args.identities * 10  # Poisson mean 10 views
        runs = 0 if args.skip_reid else args.seeds * len(args.methods) * 2
        print(
            f"plan: {args.identities} identities (~{images} images), {args.share:.0%} planted, curate with "
            f"{args.workers} actor(s); {runs} training runs ({args.phase1_epochs}+{args.phase2_epochs} epochs)"
        )
        print(
            f"curate: ~{images / (CPU_IMAGES_PER_S_PER_WORKER * args.workers):.0f} s of judging on "
            f"{args.workers} CPU actor(s) at {CPU_IMAGES_PER_S_PER_WORKER:.0f} images/s each (measured); "
            f"~{images / GPU_IMAGES_PER_S_PER_WORKER:.1f} s on one GPU at {GPU_IMAGES_PER_S_PER_WORKER:.0f} "
            "images/s (estimated: JPEG decoding and the pixel signals on the actor's CPU bound it, the tiny "
            "CLIP's forward is not the limit); nothing written"
        )
        return

    from benchmarks.curation_defects import corrupt_dataset

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    clean = work / f"train-s{args.data_seed}-n{args.identities}"
    if not (clean / "index.parquet").exists():
        generate(clean, args.data_seed, args.identities, args.workers)
    test = work / f"test-s{TEST_SEED}-n{TEST_IDENTITIES}"
    if not args.skip_reid and not (test / "index.parquet").exists():
        generate(test, TEST_SEED, TEST_IDENTITIES, args.workers)
    timings["generate_s"] = time.perf_counter() - started
    corrupted = work / f"corrupted-s{args.data_seed}-p{args.plant_seed}"
    shutil.rmtree(corrupted, ignore_errors=True)
    planted = corrupt_dataset(clean, corrupted, args.share, seed=args.plant_seed)
    result: dict[str, Any] = {
        "share": args.share,
        "data_seed": args.data_seed,
        "plant_seed": args.plant_seed,
        "identities": args.identities,
        "detection": detection(corrupted, planted, args.workers),
    }
    print(report(result), flush=True)
    if not args.skip_reid:
        t0 = time.perf_counter()
        result["reid"] = reid(str(corrupted), str(clean), str(test), args, work)
        timings["reid_s"] = time.perf_counter() - t0
        result["reid_recipe"] = {
            "phase1_epochs": args.phase1_epochs,
            "phase2_epochs": args.phase2_epochs,
            "seeds": args.seeds,
        }
    result["timings"] = {**timings, "total_s": time.perf_counter() - started}
    print(report(result))
    print(f"total {result['timings']['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
