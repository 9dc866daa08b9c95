"""The prompt engine's config (the `generate.prompts` section)."""

from __future__ import annotations

from pathlib import Path

from dppp.schema import StrictModel


class PromptsConfig(StrictModel):
    # None: the taxonomy shipped with the package (prompts/taxonomy.yaml).
    taxonomy: Path | None = None
