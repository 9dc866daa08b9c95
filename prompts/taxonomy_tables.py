"""The compiled taxonomy tables the sampler reads: a column's value vocabulary, a `when:` condition as
per-code lookups (vectorised over rows of codes), a dimension's base weights and rule factors with their
cumulative weights cached per rule combination, and a camera's profile. prompts/taxonomy.py builds them
from the validated YAML (prompts/taxonomy_schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dppp.foundation.errors import ConfigError
from dppp.prompts.taxonomy_schema import yaml_path


@dataclass(frozen=True)
class Column:
    name: str
    values: tuple[str, ...]
    index: dict[str, int] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Condition:
    """A conjunction of `column in {codes}` terms (one `when:` mapping)."""

    terms: tuple[tuple[int, frozenset[int]], ...]
    tables: tuple[np.ndarray, ...] = field(repr=False, compare=False)  # bool lookup per term, by code

    def holds_row(self, row: list[int] | tuple[int, ...]) -> bool:
        return all(row[column] in codes for column, codes in self.terms)

    def holds(self, codes: np.ndarray) -> np.ndarray:
        """Vectorised over rows of a code matrix."""
        result = np.ones(len(codes), dtype=bool)
        for (column, _), table in zip(self.terms, self.tables, strict=True):
            result &= table[codes[:, column]]
        return result

    def consistent_with(self, other: Condition) -> bool:
        """False when the two can never hold together (same column, disjoint values)."""
        mine = dict(self.terms)
        return all(column not in mine or mine[column] & codes for column, codes in other.terms)


@dataclass
class Dimension:
    name: str
    level: str  # "identity" or "view"
    column: int
    values: tuple[str, ...]
    weights: np.ndarray  # base weights, float64
    rules: tuple[tuple[Condition, np.ndarray], ...]  # (condition, per-value factor)
    hidden: Condition | None = None
    source: str = ""  # the taxonomy file, for errors
    _cumulative: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def weights_for(self, mask: int) -> np.ndarray:
        """The weights when exactly the rules whose bit is set in `mask` hold."""
        weights = self.weights.copy()
        for bit, (_, factors) in enumerate(self.rules):
            if mask >> bit & 1:
                weights *= factors
        return weights

    def cumulative(self, mask: int) -> np.ndarray:
        """Cumulative weights for one rule combination, computed once (sampling is a searchsorted)."""
        table = self._cumulative.get(mask)
        if table is None:
            weights = self.weights_for(mask)
            if not weights.sum() > 0:
                which = (
                    f"rule {_bits(mask)} leaves"
                    if mask & (mask - 1) == 0
                    else f"rules {_bits(mask)} together leave"
                )
                raise ConfigError(
                    f"{which} no value with a positive weight",
                    file=self.source or None,
                    path=yaml_path(self.level, self.name, "rules"),
                )
            table = self._cumulative[mask] = np.cumsum(weights)
        return table

    def consistent_masks(self) -> list[int]:
        """Every rule combination that is not contradictory on its face (all, when there are few rules)."""
        masks = []
        for mask in range(1 << len(self.rules)):
            active = [self.rules[bit][0] for bit in range(len(self.rules)) if mask >> bit & 1]
            if all(a.consistent_with(b) for i, a in enumerate(active) for b in active[i + 1 :]):
                masks.append(mask)
        return masks


def _bits(mask: int) -> str:
    return ", ".join(str(bit) for bit in range(mask.bit_length()) if mask >> bit & 1) or "(none)"


@dataclass(frozen=True)
class Camera:
    camid: int
    weight: float
    profile: dict[str, str]  # the camera columns as attributes (camera, scene, indoor, ...)
