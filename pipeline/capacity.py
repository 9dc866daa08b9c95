"""How long a plan takes to render (`dppp generate --dry-run`), from rates measured on real hardware.

Each renderer kind brings its own estimate (its registry entry's `estimate`: the procedural renderer's
rate per CPU core, the diffusers renderer's measured SD 1.5 rates scaled by FLOPs in
pipeline/renderers/diffusers_estimate.py); only measured figures are used, each naming the card and the
setting it was measured with (docs/benchmarks.md has the runs). A kind with nothing measured gives none.
"""

from __future__ import annotations

from typing import Any

from dppp.pipeline.renderer import RenderEstimate
from dppp.pipeline.renderers.registry import renderer_kind


def estimate_render_hours(renderer: Any, images: int) -> RenderEstimate | None:
    """Device-hours for `images` with this renderer config; None where nothing measured applies."""
    return renderer_kind(renderer).estimate(renderer, images)
