"""Stage 2's Re-ID methods by name: what each one declares, in one entry per method.

An entry (`MethodSpec`) names the method's model class (its module under trainer/methods/, imported only
when a model is built, so this module and the config stay torch-free), its phases, the losses each phase
computes, its loss-weight model (one field per loss, the `train.model.weights` keys), the phases whose
batches carry style labels, and the `loss()` parts it logs as figures rather than losses. The model class
declares the rest in code: which parameters train in each phase (`trains_in_phase`), its optimiser
parameter groups, the work between two phases (`prepare_phase`) and its retrieval feature
(`encode_images`); trainer/methods/model.py's `ReIDModel` gives the defaults.

The training loop (trainer/training/) reads only this and the model's hooks, never a method's name.
Adding a method: docs/overview.md, "Adding a method".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from dppp.foundation.schema import StrictModel


class MethodWeights(StrictModel):
    """A method's loss weights: one non-negative field per loss it computes; 0 switches that loss off."""


class BotWeights(MethodWeights):
    # phase 2 of every Re-ID method
    id: float = Field(1.0, ge=0)
    triplet: float = Field(1.0, ge=0)


class ClipReIDWeights(BotWeights):
    prompt: float = Field(1.0, ge=0)  # phase 1: image <-> per-identity learned prompt
    i2t: float = Field(1.0, ge=0)  # phase 2: image -> its identity's prompt feature


class PdmWeights(BotWeights):
    # phase 1
    align: float = Field(1.0, ge=0)  # image <-> full prompt "a [S] style photo of a [C] person"
    content: float = Field(1.0, ge=0)  # image <-> content prompt, same pid = positive
    style: float = Field(1.0, ge=0)  # S classifies the view's style attributes
    decorrelation: float = Field(1.0, ge=0)  # S and C carry different information
    # phase 2
    i2t: float = Field(1.0, ge=0)
    # Options (docs/method.md, "Options"), off at 0: computed only when their weight is positive.
    adversarial: float = Field(0.0, ge=0)  # phase 1: style heads on C through gradient reversal
    word_norm: float = Field(0.0, ge=0)  # phase 1: S and C keep the norm of real token embeddings
    style_i2t: float = Field(0.0, ge=0)  # phase 2: image -> its identities' prompts in its own style S


@dataclass(frozen=True)
class MethodSpec:
    name: str
    model: str  # "module:Class" of its ReIDModel subclass
    phases: tuple[int, ...]  # in training order; a model starts in the first
    losses: Mapping[int, tuple[str, ...]]  # phase -> the names of the loss parts it may compute
    weights: type[MethodWeights]  # has a field for every loss name above
    style_label_phases: tuple[int, ...] = ()  # phases whose batches carry the style attribute labels
    monitored: tuple[str, ...] = ()  # loss() parts logged as figures, not weighted into the total

    def model_class(self) -> type:
        module, _, name = self.model.partition(":")
        return getattr(importlib.import_module(module), name)


@dataclass
class PhaseRun:
    """What a method's `prepare_phase` may use of the running worker (trainer/training/loop.py)."""

    config: Any  # the run's TrainConfig
    data: Any  # its TrainingData
    rank: int
    world: int
    device: Any
    cuda: bool
    step: int  # global optimiser steps done
    record: Callable[[dict[str, Any]], None]  # a metrics record (written and posted by rank 0)
    last_epoch: Callable[[], dict[str, Any]]  # the latest epoch record, {} before any


_METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (checked to be self-consistent). Registering another spec under a taken name fails."""
    # A run has two schedules (train.phase1, train.phase2), so a method's phases are some of 1 and 2.
    if not spec.phases or list(spec.phases) != sorted(set(spec.phases)) or not set(spec.phases) <= {1, 2}:
        raise ValueError(f"method {spec.name!r}: phases must be 1 and/or 2, ascending, got {spec.phases}")
    if set(spec.losses) != set(spec.phases) or not set(spec.style_label_phases) <= set(spec.phases):
        raise ValueError(f"method {spec.name!r}: losses and style_label_phases must name its phases")
    unweighted = sorted(
        {n for names in spec.losses.values() for n in names}
        - set(spec.monitored)
        - set(spec.weights.model_fields)
    )
    if unweighted:
        raise ValueError(
            f"method {spec.name!r}: losses {unweighted} have no field in {spec.weights.__name__}"
        )
    if _METHODS.get(spec.name, spec) != spec:
        raise ValueError(f"method {spec.name!r} is already registered")
    _METHODS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _METHODS.pop(name, None)


def method_spec(name: str) -> MethodSpec:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(method_names())})") from None


def method_names() -> tuple[str, ...]:
    return tuple(_METHODS)


def weight_names() -> set[str]:
    """Every registered method's loss-weight keys."""
    return {name for spec in _METHODS.values() for name in spec.weights.model_fields}


# ---- the registered methods: one entry each ----------------------------------------------------------

register(
    MethodSpec(
        "bot",
        "dppp.trainer.methods.bot:BoT",
        phases=(2,),
        losses={2: ("id", "triplet")},
        weights=BotWeights,
    )
)
register(
    MethodSpec(
        "clipreid",
        "dppp.trainer.methods.clipreid:ClipReID",
        phases=(1, 2),
        losses={1: ("prompt",), 2: ("id", "triplet", "i2t")},
        weights=ClipReIDWeights,
    )
)
register(
    MethodSpec(
        "pdm",
        "dppp.trainer.methods.pdm:PDM",
        phases=(1, 2),
        losses={
            1: ("align", "content", "style", "decorrelation", "adversarial", "word_norm"),
            2: ("id", "triplet", "i2t", "style_i2t"),
        },
        weights=PdmWeights,
        style_label_phases=(1,),
    )
)
