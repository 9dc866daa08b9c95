"""Diffusers text-to-image renderer (named so it never shadows the `diffusers` package)."""

from __future__ import annotations

from typing import Literal

from dppp.schema import StrictModel


class DiffusersRendererConfig(StrictModel):
    kind: Literal["diffusers"] = "diffusers"
