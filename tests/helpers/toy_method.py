"""A Re-ID method defined outside trainer/, to show the registry is all a new method needs: this module
(its weights, its model, its registry entry) plus `register(SPEC)`.

"Centres": phase 1 learns one centre per identity in the frozen image-feature space (a centre loss, with
the mean centre norm logged as a figure); phase 2 is the shared ID + triplet objective. Between the two,
`prepare_phase` records that it ran, as PDM's identity-bank pass does its health report.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from dppp.trainer.methods.model import Batch, ReIDModel, batch_pids
from dppp.trainer.methods.registry import MethodSpec, MethodWeights, PhaseRun


class CentresWeights(MethodWeights):
    centre: float = Field(1.0, ge=0)
    id: float = Field(1.0, ge=0)
    triplet: float = Field(1.0, ge=0)


class Centres(ReIDModel):
    method = "toy_centres"

    def __init__(self, config, num_classes, style_vocab, backbone):
        super().__init__(config, num_classes, style_vocab, backbone)
        self.centres = nn.Parameter(torch.randn(num_classes, backbone.embed_dim) * 0.02)

    def trains_in_phase(self, name: str, phase: int) -> bool:
        if phase == 1:
            return name == "centres"
        return super().trains_in_phase(name, phase)

    def phase1_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        pids = batch_pids(batch, self.num_classes)
        with torch.no_grad():
            feature = F.normalize(self.backbone.encode_image(batch["pixel_values"]), dim=-1)
        return {
            "centre": (feature - self.centres[pids]).pow(2).sum(dim=1).mean(),
            "centre_norm": self.centres.detach().norm(dim=1).mean(),
        }

    def prepare_phase(self, phase: int, run: PhaseRun) -> None:
        run.record({"kind": "toy_prepared", "phase": phase, "step": run.step})


SPEC = MethodSpec(
    "toy_centres",
    "tests.helpers.toy_method:Centres",
    phases=(1, 2),
    losses={1: ("centre", "centre_norm"), 2: ("id", "triplet")},
    weights=CentresWeights,
    monitored=("centre_norm",),
)
