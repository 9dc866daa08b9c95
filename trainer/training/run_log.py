"""A training run's logs: metrics.jsonl, TensorBoard events and the loss-curve PNG, published to the run's
storage (local or s3://) next to its checkpoints.

Only rank 0 writes. The files grow in a local working folder and are published (atomically, through
dppp.foundation.storage) at every checkpoint and at the end, so what storage holds always matches a checkpoint.
On resume, metrics.jsonl is fetched back and cut at the resumed step: a step that was redone after a
failure appears once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from dppp.foundation.storage.base import ObjectNotFound, Storage

# matplotlib and torch's tensorboard writer are imported inside the functions that need them: every training
# worker imports this module, and only rank 0 writes the curves and the event files.

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "loss_curves.png"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    def __init__(self, storage: Storage, workdir: Path, resumed_step: int):
        self.storage = storage
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        kept = []
        if resumed_step > 0:
            try:
                previous = storage.read_bytes(METRICS_FILE).decode("utf-8").splitlines()
            except ObjectNotFound:
                previous = []
            kept = [
                line for line in previous if line.strip() and json.loads(line).get("step", 0) <= resumed_step
            ]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(self.workdir / TENSORBOARD_DIR))

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        step = int(record.get("step", 0))
        kind = record.get("kind", "step")
        # A held-out evaluation has one record per dataset at the same step: each its own tag.
        group = f"{kind}/{record['dataset']}" if "dataset" in record else kind
        for name, value in record.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and name not in ("step", "time")
            ):
                self.tensorboard.add_scalar(f"{group}/{name}", value, step)

    def publish(self, *, curves: bool = False) -> None:
        """Copy metrics.jsonl and the TensorBoard events (and, with `curves`, a fresh PNG) to storage."""
        self.tensorboard.flush()
        if curves:
            plot_loss_curves(self.path, self.workdir / CURVES_FILE)
            self.storage.put_file(self.workdir / CURVES_FILE, CURVES_FILE)
        for root, _dirs, files in os.walk(self.workdir / TENSORBOARD_DIR):
            for name in sorted(files):
                local = Path(root) / name
                self.storage.put_file(local, local.relative_to(self.workdir).as_posix())
        self.storage.put_file(self.path, METRICS_FILE)  # last: it names the newest published step

    def last(self, kind: str) -> dict[str, Any]:
        """The newest record of `kind` written so far (a resumed run's included), or {}."""
        found = [r for r in read_metrics(self.path) if r.get("kind") == kind]
        return found[-1] if found else {}

    def close(self) -> None:
        self.tensorboard.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_curves(metrics_path: Path, png_path: Path) -> None:
    """One panel per phase: every loss of the step records against the global step (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    phases = sorted({r["phase"] for r in steps}) or [0]
    panels = len(phases) + bool(evals)
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    if evals:
        _plot_eval(axes[0][-1], evals)
    for axis, phase in zip(axes[0], phases, strict=False):
        rows = [r for r in steps if r.get("phase") == phase]
        names = sorted({k for r in rows for k in r if k == "loss" or k.startswith("loss/")})
        for name in names:
            points = [(r["step"], r[name]) for r in rows if name in r]
            axis.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                label=name.replace("loss/", ""),
                linewidth=2 if name == "loss" else 1,
            )
        axis.set_title(f"phase {phase}")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        values = [r[n] for r in rows for n in names if isinstance(r.get(n), (int, float))]
        if values and min(values) > 0 and max(values) / min(values) > 30:
            axis.set_yscale(
                "log"
            )  # terms of very different size (a decorrelation of 0.002 beside 4): all visible
        axis.grid(alpha=0.3)
        if names:
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def _plot_eval(axis, evals: list[dict[str, Any]]) -> None:
    """The held-out evaluation (train.eval): mAP and rank-1 of each dataset against the global step."""
    for dataset in sorted({r["dataset"] for r in evals}):
        rows = [r for r in evals if r["dataset"] == dataset]
        label = dataset if len(dataset) <= 40 else "..." + dataset[-37:]
        line = axis.plot(
            [r["step"] for r in rows], [100 * r["mAP"] for r in rows], marker="o", label=f"mAP {label}"
        )
        axis.plot(
            [r["step"] for r in rows],
            [100 * r["rank1"] for r in rows],
            marker="s",
            linestyle="--",
            color=line[0].get_color(),
            label=f"rank-1 {label}",
        )
    axis.set_title("held-out evaluation")
    axis.set_xlabel("step")
    axis.set_ylabel("%")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
