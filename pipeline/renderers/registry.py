"""Every renderer kind `generate.renderer.kind` can name, and the lookups the pipeline makes through them.

A kind is a config model plus one `RendererKind` entry (pipeline/renderer.py): the generate config
validates `generate.renderer` against the registered models (a pydantic union told apart by `kind`), the
workers load through `load_renderer`, and prompting, `--dry-run` and the pool's shape ask the entry. No
module outside a renderer's own names a kind. The built-in entries are below; a kind defined elsewhere
calls `register` when its module is imported (tests/helpers/toy_renderer.py does).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, PlainValidator, SerializeAsAny, TypeAdapter

from dppp.pipeline.renderer import Renderer, RendererKind
from dppp.pipeline.renderers.diffusers_config import DiffusersRendererConfig, diffusers_tokenizer
from dppp.pipeline.renderers.diffusers_estimate import estimate_diffusers_hours
from dppp.pipeline.renderers.procedural.renderer import (
    ProceduralRenderer,
    ProceduralRendererConfig,
    estimate_procedural_hours,
)

if TYPE_CHECKING:
    from dppp.pipeline.renderers.diffusers_renderer import DiffusersRenderer

# diffusers_renderer.py (torch, diffusers) is imported inside _load_diffusers: loading the config imports this
# module, and must not pay for torch.


def _load_diffusers(config: DiffusersRendererConfig) -> DiffusersRenderer:
    from dppp.pipeline.renderers.diffusers_renderer import DiffusersRenderer

    return DiffusersRenderer(config)


PROCEDURAL = RendererKind(
    ProceduralRendererConfig,
    load=ProceduralRenderer,
    estimate=estimate_procedural_hours,
    follows_prompts_taxonomy=True,
)
DIFFUSERS = RendererKind(
    DiffusersRendererConfig,
    load=_load_diffusers,
    estimate=estimate_diffusers_hours,
    tokenizer=diffusers_tokenizer,
    uses_gpu=True,
)
DEFAULT = PROCEDURAL  # a generate config without a renderer section renders with it

_KINDS: dict[str, RendererKind] = {}


def register(kind: RendererKind) -> None:
    """Make `kind` a value of `generate.renderer.kind`. Registering the same entry again (its module
    imported twice) changes nothing; another entry under a taken name is a programming error."""
    field = kind.config.model_fields.get("kind")
    if field is None or not isinstance(field.default, str):
        raise ValueError(
            f"{kind.config.__name__} needs a `kind: Literal[NAME] = NAME` field to be registered"
        )
    taken = _KINDS.get(kind.name)
    if taken is not None and taken != kind:
        raise ValueError(f"renderer kind {kind.name!r} is already registered (by {taken.config.__module__})")
    _KINDS[kind.name] = kind
    _config_union.cache_clear()


def kinds() -> tuple[RendererKind, ...]:
    return tuple(_KINDS.values())


def find_kind(name: Any) -> RendererKind | None:
    return _KINDS.get(name) if isinstance(name, str) else None


def renderer_kind(config: Any) -> RendererKind:
    """The entry of a validated renderer config."""
    kind = find_kind(getattr(config, "kind", None))
    if kind is None or not isinstance(config, kind.config):
        raise TypeError(f"{type(config).__name__} is not the config of a registered renderer kind")
    return kind


def load_renderer(config: Any) -> Renderer:
    """Build the configured renderer (imports torch/diffusers only when that renderer needs them)."""
    return renderer_kind(config).load(config)


def default_renderer_config() -> BaseModel:
    return DEFAULT.config()


@cache
def _config_union() -> TypeAdapter:
    models = tuple(kind.config for kind in _KINDS.values())
    return TypeAdapter(Annotated[Union[models], Field(discriminator="kind")])  # noqa: UP007 (a runtime tuple)


def validate_renderer_config(value: Any) -> BaseModel:
    """A renderer section validated as the model its `kind` names; errors are the union's own, at their
    keys (a kind no entry has lists the registered ones)."""
    return _config_union().validate_python(value)


# The type of `generate.renderer`: any registered kind's config, checked when validated (a kind registered
# after GenerateConfig was defined counts too), and dumped with its own fields in their own order.
RendererConfig = Annotated[SerializeAsAny[BaseModel], PlainValidator(validate_renderer_config)]

for _builtin in (PROCEDURAL, DIFFUSERS):
    register(_builtin)
