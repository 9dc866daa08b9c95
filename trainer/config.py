"""Stage-2 configs: the `train` and `eval` sections (issues 6-8 fill them)."""

from __future__ import annotations

from dppp.schema import StrictModel


class TrainConfig(StrictModel):
    pass


class EvalConfig(StrictModel):
    pass
