"""Held-out evaluation during training (`train.eval`): `dppp eval`'s protocol on rank 0 at epoch ends.

    train:
      eval: {datasets: ["synthetic:runs/demo/heldout"], every_epochs: 5}

On the driver, before Ray starts (`check_eval_datasets`): every dataset is read (a bad spec or path fails
in a second), and each dppp dataset must share no person with the training data's dppp datasets, nor with
the backbone's pretraining corpus (`dppp eval`'s check): a held-out figure over people the model trained
on would flatter it. Benchmark folders are split by their own protocol (train / query / gallery).

In the run (`HeldOutEval`): the method's last phase, the one that trains the image encoder, is evaluated
every `every_epochs` of its epochs and at its last. Rank 0 evaluates alone while the other ranks wait at
the checkpoint that follows; the splits are read once per worker-group start.
"""

from __future__ import annotations

from typing import Any

from dppp.foundation.errors import DataError
from dppp.trainer.clip.model_card import check_people_disjoint
from dppp.trainer.data.identities import check_disjoint, people
from dppp.trainer.data.specs import parse_dataset_spec, parse_source
from dppp.trainer.evaluation.evaluate import evaluate_splits, read_splits
from dppp.trainer.training.config import TrainConfig

EVAL_KIND = "eval"


def check_eval_datasets(config: TrainConfig, sources: list[str]) -> None:
    """DataError/UserError before any worker starts: an unreadable eval dataset, or one that shares
    people with the training data or the backbone's pretraining corpus."""
    specs = list(config.eval.datasets)
    if not specs:
        return

    storage = config.data.storage
    read_splits(specs, config.eval.protocol, storage)
    held_out = [parse_dataset_spec(spec) for spec in specs]
    check_people_disjoint(config.model.backbone, [s.path for s in held_out if s.is_dataset], storage)
    for source in map(parse_source, sources):
        if not source.is_dataset:
            continue
        trained = people(source.path, storage)
        if trained is None:
            continue
        for spec, parsed in zip(specs, held_out, strict=True):
            if parsed.is_dataset:
                try:
                    check_disjoint(trained.values(), parsed.path, f"training data {source.path}", storage)
                except DataError as exc:
                    raise DataError(f"train.eval.datasets {spec}: {exc}") from None


class HeldOutEval:
    """Rank 0's evaluation of the held-out datasets at the epoch ends `train.eval` asks for."""

    def __init__(self, config: TrainConfig, last_phase: int):
        self.config, self.last_phase = config, last_phase
        self.splits: list[tuple[str, Any, Any]] | None = None

    def due(self, phase: int, epoch: int, epochs: int) -> bool:
        """Whether epoch `epoch` (0-based, within `phase` of `epochs` epochs) ends with an evaluation."""
        every = self.config.eval.every_epochs
        return (
            bool(self.config.eval.datasets)
            and phase == self.last_phase
            and ((epoch + 1) % every == 0 or epoch + 1 == epochs)
        )

    def run(self, model, device, *, step: int, phase: int, epoch: int) -> list[dict[str, Any]]:
        """One record per dataset: {"kind": "eval", "step", "phase", "epoch", "dataset", "mAP", "rank1",
        "rank5", "rank10", "mINP", "queries", "gallery", "seconds"}. The model is back in train mode after."""
        protocol, storage = self.config.eval.protocol, self.config.data.storage
        if self.splits is None:
            self.splits = read_splits(self.config.eval.datasets, protocol, storage)
        model.eval()
        try:
            reports = evaluate_splits(model, self.splits, protocol, device, storage)
        finally:
            model.train()
        return [
            {
                "kind": EVAL_KIND,
                "step": step,
                "phase": phase,
                "epoch": epoch,
                "dataset": report.spec,
                "mAP": report.mAP,
                "rank1": report.rank1,
                "rank5": report.rank5,
                "rank10": report.rank10,
                "mINP": report.mINP,
                "queries": report.num_query,
                "gallery": report.num_gallery,
                "seconds": report.seconds,
            }
            for report in reports
        ]
