"""Procedural renderer: numpy/PIL drawings of the sampled pedestrian, for CPU runs and tests."""

from __future__ import annotations

from typing import Literal

from dppp.schema import StrictModel


class ProceduralRendererConfig(StrictModel):
    kind: Literal["procedural"] = "procedural"
