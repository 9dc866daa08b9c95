"""Stage-2 config: the `train` section (the model issue fills `model`, the training issue the rest)."""

from __future__ import annotations

from dppp.schema import StrictModel


class TrainConfig(StrictModel):
    pass
