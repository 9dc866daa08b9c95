"""Weighted categorical sampling of taxonomy dimensions, vectorised over many rows at once.

A row is one person (identity dimensions) or one image (plus camera and view dimensions) as integer codes.
For each dimension, in taxonomy order, the rules that hold for each row form a bit mask; rows sharing a mask
share one cumulative weight table (built once per mask), and a uniform draw becomes a code by searchsorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dppp.prompts.taxonomy_tables import Dimension


def pick(cumulative: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: the first index whose cumulative weight exceeds u * total."""
    codes = np.searchsorted(cumulative, uniforms * cumulative[-1], side="right")
    if codes.size and codes.max() >= len(cumulative):
        # u * total rounded up to total: take the last value that has a weight.
        weights = np.diff(cumulative, prepend=0.0)
        codes = np.minimum(codes, np.flatnonzero(weights > 0)[-1])
    return codes


def rule_masks(dim: Dimension, codes: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(codes), dtype=np.int64)
    for bit, (condition, _) in enumerate(dim.rules):
        mask |= condition.holds(codes).astype(np.int64) << bit
    return mask


def sample_dimensions(dims: Sequence[Dimension], codes: np.ndarray, uniforms: np.ndarray) -> None:
    """Fill each dimension's column of `codes` in place; dimension j uses column j of `uniforms`."""
    for j, dim in enumerate(dims):
        u = uniforms[:, j]
        if not dim.rules:
            codes[:, dim.column] = pick(dim.cumulative(0), u)
            continue
        mask = rule_masks(dim, codes)
        first = mask[0] if len(mask) else 0
        if (mask == first).all():
            codes[:, dim.column] = pick(dim.cumulative(int(first)), u)
            continue
        for value in np.unique(mask):
            rows = mask == value
            codes[rows, dim.column] = pick(dim.cumulative(int(value)), u[rows])


def row_mask(dim: Dimension, row: Sequence[int]) -> int:
    mask = 0
    for bit, (condition, _) in enumerate(dim.rules):
        if condition.holds_row(row):
            mask |= 1 << bit
    return mask
