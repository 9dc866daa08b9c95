"""Domain generalization: train bot, clipreid and pdm on a source domain, test on an unseen target domain.

    .venv/bin/python benchmarks/bench_domain_generalization.py [--size small|medium|large] [--work DIR]
        [--methods bot clipreid pdm] [--backbone tiny|CLIP folder or hub id] [--no-doc] [--keep]

Both domains come from the procedural renderer and two taxonomies derived from the shipped one
(prompts/taxonomy.yaml), which differ only in their view side:

    source: cameras 1-6 (their scenes: sidewalk, campus, mall, subway, park, parking lot) and the
            illuminations bright midday sun, overcast daylight, soft morning light (outdoor),
            fluorescent and warm indoor lighting (indoor)
    target: cameras 7-10 (office lobby, crosswalk, train concourse, residential street) and the
            illuminations warm evening light, dusk, night under streetlights, harsh shadows (outdoor),
            dim indoor lighting (indoor), backlit (both)

Each domain keeps indoor and outdoor cameras and lights, so every listed illumination stays reachable
under the taxonomy's indoor/outdoor rules (checked by sampling before anything is rendered). Three
datasets are generated with different seeds, hence different people:

    source-train   the training set (source style)
    source-test    held-out identities, source style: the in-domain figures
    target-test    held-out identities, target style: the domain-generalization figures

Every method is trained through trainer.train.run_train (1 Ray Train worker) with the same budget: the
same tiny CLIP, P x K, augmentation and phase-2 (image-encoder) epochs, and the same training seeds (2
for `small`: the spread between them shows the noise); clipreid and pdm also run their phase 1
(prompt-side modules only, image encoder frozen), which is part of those methods. The same
untrained model (random init) is evaluated as the floor every method must beat. Evaluation is
trainer.evaluate.run_eval (Market-1501 protocol, cosine, no flip, no re-ranking).

The table goes to stdout and, unless --no-doc, replaces this benchmark's own section
(`## domain generalization`) of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCE_CAMERAS = (1, 2, 3, 4, 5, 6)
TARGET_CAMERAS = (7, 8, 9, 10)
SOURCE_LIGHTS = ("bright midday sun", "overcast daylight", "soft morning light", "fluorescent indoor lighting",
                 "warm indoor lighting")  # fmt: skip
TARGET_LIGHTS = ("warm evening light", "dusk", "night under streetlights", "harsh shadows", "dim indoor lighting",
                 "backlit")  # fmt: skip
METHODS = ("bot", "clipreid", "pdm")
SECTION = "## domain generalization"


@dataclass(frozen=True)
class Size:
    train_ids: int
    test_ids: int
    views: float  # mean views per identity (Poisson, 4..20)
    image: tuple[int, int]  # rendered and model input (height, width)
    phase1_epochs: int
    phase2_epochs: int
    ids_per_batch: int  # P
    images_per_id: int  # K
    hidden: int  # tiny CLIP width (2 layers, patch 16)
    seeds: int  # training runs per method (seed = shard order, batches, augmentation and init weights)


SIZES = {
    # ~15 minutes on the shared 2-core VM: the default, and what docs/benchmarks.md records.
    "small": Size(train_ids=128, test_ids=64, views=8, image=(128, 64), phase1_epochs=6, phase2_epochs=30,
                  ids_per_batch=8, images_per_id=4, hidden=64, seeds=2),
    "medium": Size(train_ids=256, test_ids=64, views=10, image=(128, 64), phase1_epochs=10, phase2_epochs=30,
                   ids_per_batch=16, images_per_id=4, hidden=128, seeds=3),
    "large": Size(train_ids=1024, test_ids=128, views=12, image=(256, 128), phase1_epochs=20, phase2_epochs=60,
                  ids_per_batch=16, images_per_id=4, hidden=256, seeds=3),
}  # fmt: skip


# ---- the two domains ------------------------------------------------------------------------------------


def domain_taxonomy(base: dict, cameras: tuple[int, ...], lights: tuple[str, ...]) -> dict:
    """The shipped taxonomy restricted to some cameras and illuminations. Rules that name a removed
    illumination lose that value (and vanish when nothing is left), rules on an indoor/outdoor kind no
    kept camera has vanish; everything else is kept as is."""
    import copy

    data = copy.deepcopy(base)
    data["cameras"] = [camera for camera in data["cameras"] if camera["camid"] in cameras]
    indoor_flags = {camera["indoor"] for camera in data["cameras"]}  # YAML's yes/no load as booleans
    illumination = data["view"]["illumination"]
    illumination["values"] = {k: v for k, v in illumination["values"].items() if k in lights}
    for dimensions in (data["identity"], data["view"]):
        for spec in dimensions.values():
            kept = []
            for rule in spec.get("rules", []):
                when = dict(rule["when"])
                if "indoor" in when and when["indoor"] not in indoor_flags:
                    continue  # no camera of this domain is (or is not) indoor
                if "illumination" in when:
                    names = when["illumination"] if isinstance(when["illumination"], list) else [when["illumination"]]
                    names = [n for n in names if n in lights]
                    if not names:
                        continue  # the condition can never hold in this domain
                    when["illumination"] = names
                weights = rule["weights"]
                if spec is illumination:
                    weights = {k: v for k, v in weights.items() if k in lights}
                if weights:
                    kept.append({**rule, "when": when, "weights": weights})
            if "rules" in spec:
                spec["rules"] = kept
    return data


def write_domains(work: Path) -> dict[str, Path]:
    """source.yaml and target.yaml under work/, after checking that the two domains split the shipped
    cameras and illuminations between them."""
    import yaml

    base = yaml.safe_load((ROOT / "prompts" / "taxonomy.yaml").read_text())
    all_cameras = {c["camid"] for c in base["cameras"]}
    all_lights = set(base["view"]["illumination"]["values"])
    assert set(SOURCE_CAMERAS) | set(TARGET_CAMERAS) == all_cameras and not set(SOURCE_CAMERAS) & set(TARGET_CAMERAS)
    assert set(SOURCE_LIGHTS) | set(TARGET_LIGHTS) == all_lights and not set(SOURCE_LIGHTS) & set(TARGET_LIGHTS)
    paths = {}
    for name, cameras, lights in (("source", SOURCE_CAMERAS, SOURCE_LIGHTS), ("target", TARGET_CAMERAS, TARGET_LIGHTS)):
        paths[name] = work / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(domain_taxonomy(base, cameras, lights), sort_keys=False))
    return paths


def generate_config(taxonomy: Path, out: Path, seed: int, identities: int, size: Size):
    from pipeline.generate import GenerateConfig

    height, width = size.image
    return GenerateConfig.model_validate({
        "out": str(out), "seed": seed, "identities": identities, "ids_per_shard": 8, "workers": 2,
        "prompts": {"taxonomy": str(taxonomy), "views": {"distribution": "poisson", "mean": size.views, "min": 4,
                                                         "max": 20}},
        "renderer": {"kind": "procedural", "height": height, "width": width, "taxonomy": str(taxonomy)},
        "output": {"height": height, "width": width, "format": "jpg", "quality": 90},
    })  # fmt: skip


def check_reachable(config, cameras: tuple[int, ...], lights: tuple[str, ...]) -> None:
    """Sample 400 identities' views with the prompt engine: every camera and illumination of the domain
    must occur (the indoor/outdoor rules could otherwise silently make one unreachable)."""
    from prompts.engine import PromptEngine

    probe = config.model_copy(update={"identities": 400})
    seen_cameras, seen_lights = set(), set()
    for view in PromptEngine.from_config(probe).iter_views(range(400)):
        seen_cameras.add(view.camid)
        seen_lights.add(view.attributes["illumination"])
    missing = sorted(set(cameras) - seen_cameras) + sorted(set(lights) - seen_lights)
    if missing or seen_cameras - set(cameras) or seen_lights - set(lights):
        raise SystemExit(f"domain of {config.prompts.taxonomy}: unreachable or foreign values {missing}, "
                         f"seen cameras {sorted(seen_cameras)}, lights {sorted(seen_lights)}")  # fmt: skip


# ---- training and evaluation ------------------------------------------------------------------------------


def train_config(method: str, size: Size, out: Path, backbone: str = "tiny", seed: int = 0):
    from trainer.config import TrainConfig

    height, width = size.image
    if backbone == "tiny":
        # A randomly initialised tiny CLIP learns from scratch: learning rates far above CLIP-ReID's
        # fine-tuning ones, the same for every method. At 5e-4 the ID loss of all three stayed within 1%
        # of chance (log #ids) after 12 epochs on `small`.
        phase1, phase2 = {"lr": 1e-3}, {"lr": 3e-3, "warmup_epochs": 1}
    else:  # pretrained weights: CLIP-ReID's schedule (the config defaults), only the epochs scaled
        phase1, phase2 = {}, {"warmup_epochs": max(1, size.phase2_epochs // 6)}
    return TrainConfig.model_validate({
        "model": {"method": method, "image_size": [height, width], "backbone": backbone, "init_seed": seed,
                  "tiny": {"hidden_size": size.hidden, "intermediate_size": 2 * size.hidden, "num_layers": 2,
                           "num_heads": 4, "patch_size": 16, "projection_dim": size.hidden},
                  "style_attributes": ["illumination", "weather", "camid"]},
        "phase1": {"epochs": size.phase1_epochs, **phase1},
        "phase2": {"epochs": size.phase2_epochs, **phase2},
        "data": {"ids_per_batch": size.ids_per_batch, "images_per_id": size.images_per_id, "num_workers": 0},
        "out": str(out), "run_name": f"{method}-seed{seed}", "seed": seed, "workers": 1, "cpus_per_worker": 1,
        "checkpoint_keep": 1, "log_every_steps": 20,
    })  # fmt: skip


def untrained_model(size: Size, data_url: str, folder: Path, backbone: str) -> str:
    """The random-init model every method starts from (bot's head), saved as a checkpoint: the floor."""
    from trainer.checkpoint import save_checkpoint
    from trainer.data import open_training_data
    from trainer.model import build_model

    data = open_training_data([data_url])
    model = build_model(train_config("bot", size, folder, backbone).model, data.num_classes, {})
    model.set_phase(2)
    save_checkpoint(folder, model, step=0)
    return str(folder)


def evaluate(model_url: str, datasets: dict[str, str]) -> dict[str, object]:
    from trainer.evaluate import EvalConfig, run_eval

    report = run_eval(model_url, [f"synthetic:{url}" for url in datasets.values()], EvalConfig(batch_size=64))
    return dict(zip(datasets, report.datasets, strict=True))


def bank_spread(model_url: str) -> float | None:
    """Mean pairwise cosine similarity of the identity text bank (clipreid, pdm): near 1, every identity's
    phase-2 text target is the same vector and the image-to-text loss cannot tell identities apart."""
    import torch

    from trainer.checkpoint import load_checkpoint

    model, _ = load_checkpoint(model_url)
    if not model.uses_identity_bank:
        return None
    bank = model.identity_text[model.identity_known]
    similarity = bank @ bank.T
    return float(similarity[~torch.eye(len(bank), dtype=torch.bool)].mean())


# ---- report ---------------------------------------------------------------------------------------------


def table(rows: list[dict], baseline: str = "bot") -> str:
    """One line per method: the mean over its seeds, and for mAP the per-seed values in brackets, so the
    spread between seeds (the noise) can be read next to the differences between methods."""
    import statistics

    methods = list(dict.fromkeys(r["method"] for r in rows))
    runs = {m: [r for r in rows if r["method"] == m] for m in methods}

    def mean(method: str, key) -> float:
        return statistics.fmean(key(r) for r in runs[method])

    def pct(method: str, dataset: str, metric: str, spread: bool = False) -> str:
        values = [100 * getattr(r[dataset], metric) for r in runs[method]]
        text = f"{statistics.fmean(values):.1f}"
        return text + (f" ({', '.join(f'{v:.1f}' for v in values)})" if spread and len(values) > 1 else "")

    lines = ["| method | seeds | train steps | train s | in-domain rank-1 | in-domain mAP | target rank-1 | target mAP "
             "| target mINP | target mAP / in-domain | target mAP vs bot | text bank cos |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    base = mean(baseline, lambda r: r["target-test"].mAP) if baseline in runs else 0.0
    for m in methods:
        target, source = mean(m, lambda r: r["target-test"].mAP), mean(m, lambda r: r["source-test"].mAP)
        banks = [r["bank"] for r in runs[m] if r.get("bank") is not None]
        lines.append(
            f"| {m} | {len(runs[m])} | {runs[m][0]['steps']} | {mean(m, lambda r: r['train_s']):.0f} | "
            f"{pct(m, 'source-test', 'rank1')} | {pct(m, 'source-test', 'mAP', True)} | "
            f"{pct(m, 'target-test', 'rank1')} | {pct(m, 'target-test', 'mAP', True)} | "
            f"{pct(m, 'target-test', 'mINP')} | {target / source:.2f} | "
            f"{f'{target / base:.2f}x' if base else '-'} | {f'{statistics.fmean(banks):.4f}' if banks else '-'} |"
        )
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace (or append) this benchmark's own section of docs/benchmarks.md, leaving the others alone."""
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    start = doc.find(f"\n{SECTION}\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = doc.find("\n## ", start + 1)
        doc = doc[: start + 1] + text.rstrip("\n") + "\n" + (doc[end:] if end >= 0 else "")
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-dg", help="datasets and runs go here")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--backbone", default="tiny",
                        help="tiny (random init, offline) or a local folder / hub id of CLIP weights")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (default: removed at the end)")
    args = parser.parse_args()
    size = SIZES[args.size]
    started = time.perf_counter()

    import ray

    from pipeline.generate import run_generate
    from trainer.train import run_train

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    domains = write_domains(args.work)
    plans = {  # name: (taxonomy, seed, identities, cameras, lights)
        "source-train": (domains["source"], 11, size.train_ids, SOURCE_CAMERAS, SOURCE_LIGHTS),
        "source-test": (domains["source"], 12, size.test_ids, SOURCE_CAMERAS, SOURCE_LIGHTS),
        "target-test": (domains["target"], 13, size.test_ids, TARGET_CAMERAS, TARGET_LIGHTS),
    }
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    timings: dict[str, float] = {}
    try:
        urls = {}
        for name, (taxonomy, seed, identities, cameras, lights) in plans.items():
            config = generate_config(taxonomy, args.work / "data" / name, seed, identities, size)
            check_reachable(config, cameras, lights)
            t0 = time.perf_counter()
            summary = run_generate(config, progress=False)
            timings[f"generate {name}"] = time.perf_counter() - t0
            urls[name] = config.out
            print(f"{name}: {summary.images} images in {timings[f'generate {name}']:.0f} s", flush=True)
        tests = {k: urls[k] for k in ("source-test", "target-test")}
        rows = [{"method": "untrained (random init)", "steps": 0, "train_s": 0.0,
                 **evaluate(untrained_model(size, urls["source-train"], args.work / "untrained", args.backbone),
                             tests)}]  # fmt: skip
        for seed in range(size.seeds):
            for method in args.methods:
                t0 = time.perf_counter()
                config = train_config(method, size, args.work / "runs", args.backbone, seed)
                result = run_train(config, [urls["source-train"]], progress=False)
                train_s = time.perf_counter() - t0
                timings[f"train {method}"] = timings.get(f"train {method}", 0.0) + train_s
                rows.append({"method": method, "steps": result.steps, "train_s": train_s,
                             "bank": bank_spread(result.final_url), **evaluate(result.final_url, tests)})  # fmt: skip
                losses = {k: round(v, 3) for k, v in result.last_epoch.items() if k.startswith("loss")}
                print(f"{method} seed {seed}: {result.steps} steps in {train_s:.0f} s; last epoch {losses}", flush=True)
    finally:
        ray.shutdown()
    total = time.perf_counter() - started
    text = table(rows)
    print(text)
    print(f"total {total / 60:.1f} min")
    split_counts = {name: (r.num_query, r.num_gallery) for name, r in rows[0].items() if name.endswith("-test")}
    if not args.no_doc:
        write_section(report_text(args, size, text, split_counts, timings, total))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


def report_text(args, size: Size, text: str, split_counts, timings, total: float) -> str:
    command = "`.venv/bin/python benchmarks/bench_domain_generalization.py" + (
        f" --size {args.size}" if args.size != "small" else "") + (
        f" --backbone {args.backbone}" if args.backbone != "tiny" else "") + "`"
    counts = ", ".join(f"{name} {q} queries x {g} gallery" for name, (q, g) in split_counts.items())
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"""{SECTION}

Source -> target generalization of the three methods on procedural data. Domains, budget and protocol:
the docstring of benchmarks/bench_domain_generalization.py and docs/evaluation.md.

Command: {command}.
Size `{args.size}`: {size.train_ids} training identities, {size.test_ids} per test set, ~{size.views:g} views each at
{size.image[0]}x{size.image[1]}; backbone `{args.backbone}` (tiny: width {size.hidden}, 2 layers, patch 16); P x K =
{size.ids_per_batch} x {size.images_per_id}; phase 1 {size.phase1_epochs} epochs (clipreid, pdm), phase 2 {size.phase2_epochs} epochs (all);
{size.seeds} training seed(s) per method.
Machine: {platform.machine()} {os.cpu_count()}-core CPU VM shared with other engineers, no GPU, load average
{load:.1f} at the end. Wall time {total / 60:.1f} min ({stages}).
Test splits: {counts}.
Figures in %: the mean over seeds, per-seed mAPs in brackets. "text bank cos" is the mean pairwise
cosine similarity of the phase-2 identity text targets (1: every identity has the same target).

{text}
"""


if __name__ == "__main__":
    main()
