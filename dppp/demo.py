"""`make demo`: the whole paradigm on one CPU machine, as the `dppp` commands a user would type.

Every step is a real `dppp` command (printed before it runs) on configs/demo.yaml: generate the training
set and a held-out set of other identities on a local Ray instance into a local folder, verify them, draw
a contact sheet, train PDM with Ray Train, evaluate on the held-out set. Each step resumes: a rerun skips
committed shards, continues training from its newest checkpoint, and re-evaluates.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dppp.cli import main as dppp
from dppp.config import load_experiment
from dppp.dataset.keys import sample_key
from dppp.pipeline.prompting import prompt_engine
from dppp.trainer.clip.model_card import read_card
from dppp.trainer.evaluation.config import EvalConfig
from dppp.trainer.evaluation.evaluate import evaluate_untrained
from dppp.trainer.evaluation.zero_shot import report_from_dict

CONFIG = "configs/demo.yaml"
RUNS = Path("runs/demo")
HELDOUT = RUNS / "heldout"  # other identities (another seed), same taxonomy and renderer
HELDOUT_IDENTITIES = 32
HELDOUT_SEED = 1_000
SHEET = RUNS / "contact_sheet.png"
REPORT = RUNS / "report.json"


def step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ dppp {' '.join(argv)}", flush=True)
    try:
        code = dppp(argv)
    finally:
        leave_ray()
    if code != 0:
        print(f"\ndemo stopped: `dppp {' '.join(argv)}` exited with {code}", file=sys.stderr)
        sys.exit(code)


def leave_ray() -> None:
    """Stop the Ray instance a step started, so that each step runs as it would typed in a shell, with its
    own Ray: `dppp train` keeps Ray Train's narration (and Ray's internal log lines) off the terminal, which
    a Ray started by `dppp generate` in the same process would print."""
    ray = sys.modules.get("ray")  # not imported: no step started it
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def show_prompts(generate_config, identities: int = 3) -> None:
    """A few of the prompts stage 1 renders (all of them: `dppp prompts sample configs/demo.yaml`)."""
    print(f"== 1/6 prompts: the first view of {identities} identities (dppp prompts sample {CONFIG})")
    engine = prompt_engine(generate_config, config_file=CONFIG)
    for pid in range(identities):
        view = engine.view(pid, 0)
        print(f"  {sample_key(view.pid, view.view)} camera {view.camid}: {view.prompt}")


def show_backbone(train_config) -> None:
    """What PDM starts from: the pretrained tiny CLIP's model card (`make pretrain` made it)."""
    backbone = train_config.model.backbone
    card = read_card(backbone) if backbone != "tiny" and Path(backbone).is_dir() else None
    if not card:
        print(f"   backbone: {backbone}")
        return
    data, training = card.get("data", {}), card.get("training", {})
    print(
        f"   backbone {backbone}: a tiny CLIP pretrained (`make pretrain`) on {data.get('images')} images of "
        f"{data.get('identities')} other people, {training.get('steps')} steps, contrastive loss "
        f"{training.get('final_loss', 0):.2f} (chance {training.get('chance_loss', 0):.2f})"
    )
    if "zero_shot" in card:
        report = report_from_dict(card["zero_shot"])
        best = sorted(report.attributes, key=lambda a: a.accuracy - a.chance, reverse=True)[:5]
        print(
            f"   zero-shot, by text prompts alone, on {report.images} held-out images: mean accuracy "
            f"{report.mean_accuracy:.0%} (chance {report.mean_chance:.0%}); "
            + ", ".join(f"{a.name} {a.accuracy:.0%} (chance {a.chance:.0%})" for a in best)
        )


def untrained_figures(model_config, eval_config: dict):
    """The held-out figures of the pretrained backbone with no fine-tuning, under the evaluation config the
    trained model's report used (`dppp eval`'s code: trainer/evaluation/evaluate.py), and the seconds taken."""
    started = time.perf_counter()
    [floor] = evaluate_untrained(
        model_config, [f"synthetic:{HELDOUT}"], EvalConfig.model_validate(eval_config)
    )
    return floor, time.perf_counter() - started


def run_demo() -> None:
    config = load_experiment(CONFIG)
    dataset = config.generate.out
    run_dir = Path(config.train.out) / config.train.run_name
    started = time.perf_counter()

    show_prompts(config.generate)
    step(
        "2/6 generate the training set (procedural renderer, local Ray, local object store)",
        ["generate", CONFIG],
    )
    step(
        "3/6 generate a held-out set: other identities, never trained on",
        [
            "generate",
            CONFIG,
            "--out",
            str(HELDOUT),
            "--identities",
            str(HELDOUT_IDENTITIES),
            "--set",
            f"generate.seed={HELDOUT_SEED}",
        ],
    )
    step("4/6 verify both datasets and draw a contact sheet", ["shards", "verify", dataset])
    step("4/6 (held-out)", ["shards", "verify", str(HELDOUT)])
    step("4/6 (contact sheet)", ["shards", "grid", dataset, "--out", str(SHEET), "--n", "64"])
    print("\n== 5/6 the CLIP that PDM starts from")
    show_backbone(config.train)
    step("5/6 train PDM on the training set (Ray Train, streaming from the shards)", ["train", CONFIG])
    step(
        "6/6 evaluate on the held-out identities (Market-1501 protocol)",
        ["eval", str(run_dir), "--data", f"synthetic:{HELDOUT}", "--out", str(REPORT)],
    )

    report = json.loads(REPORT.read_text())
    result = report["datasets"][0]
    floor, floor_s = untrained_figures(config.train.model, report["config"])
    print(f"\n== done in {(time.perf_counter() - started) / 60:.1f} min")
    print(
        f"held-out rank-1 {result['rank1']:.1%}, mAP {result['mAP']:.1%} "
        f"({result['num_valid']} queries; a random ranking scores rank-1 {result['chance_rank1']:.1%})"
    )
    print(
        f"the backbone before training ({config.train.model.backbone}, no fine-tuning, same split and "
        f"protocol): rank-1 {floor.rank1:.1%}, mAP {floor.mAP:.1%}; training added "
        f"{100 * (result['rank1'] - floor.rank1):+.1f} and {100 * (result['mAP'] - floor.mAP):+.1f} points "
        f"({floor_s:.1f} s to measure)"
    )
    print("outputs:")
    for what, where in [
        ("training set (shards, dataset.json, index.parquet)", dataset),
        ("held-out set", HELDOUT),
        ("contact sheet", SHEET),
        ("loss curves", run_dir / "loss_curves.png"),
        ("metrics (JSON lines; TensorBoard in tensorboard/)", run_dir / "metrics.jsonl"),
        ("model (safetensors + checkpoint.json)", run_dir / "final"),
        ("evaluation report", REPORT),
    ]:
        print(f"  {what:52s} {where}")


if __name__ == "__main__":
    run_demo()
