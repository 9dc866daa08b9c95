"""`dppp eval`: Re-ID evaluation of a trained model on benchmark folders or synthetic splits."""

from __future__ import annotations

from dppp.schema import StrictModel


class EvalConfig(StrictModel):
    pass
