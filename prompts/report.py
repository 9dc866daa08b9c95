"""What `dppp prompts sample` and `dppp prompts stats` do: JSON lines of views, and attribute coverage."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.table import Table

from dppp.foundation.errors import SettingError
from dppp.prompts.engine import PromptEngine
from dppp.prompts.spec import ViewSpec

# matplotlib is imported inside plot_coverage: `dppp prompts` imports this module for the samples and the
# coverage table, and only --plot needs it (and the Agg backend must be chosen before pyplot loads).

ViewRecord = Callable[[ViewSpec], dict[str, Any]]


def sample_lines(engine: PromptEngine, pids: Iterable[int], record: ViewRecord) -> Iterator[str]:
    for view in engine.iter_views(pids):
        yield json.dumps(record(view), ensure_ascii=False)


def write_samples(engine: PromptEngine, identities: int, out: TextIO, *, record: ViewRecord) -> int:
    """Every view of pids 0 .. identities - 1 as JSON lines of `record(view)` on `out` (the caller names
    the samples: their keys are the shard contract's, dataset.keys.view_record); returns the number of lines."""
    lines = 0
    chunk: list[str] = []
    for line in sample_lines(engine, range(identities), record):
        chunk.append(line)
        if len(chunk) == 1024:
            out.write("\n".join(chunk) + "\n")
            lines += len(chunk)
            chunk = []
    if chunk:
        out.write("\n".join(chunk) + "\n")
        lines += len(chunk)
    out.flush()
    return lines


@dataclass(frozen=True)
class DimensionCoverage:
    name: str
    level: str  # identity (counted per identity), camera or view (counted per view)
    counts: dict[str, int]  # every value of the dimension, in taxonomy order, zero included
    total: int

    @property
    def covered(self) -> int:
        return sum(1 for n in self.counts.values() if n)

    @property
    def missing(self) -> list[str]:
        return [value for value, n in self.counts.items() if not n]


@dataclass(frozen=True)
class Coverage:
    identities: int
    views: int
    dimensions: tuple[DimensionCoverage, ...]


def measure_coverage(engine: PromptEngine, identities: int) -> Coverage:
    taxonomy = engine.taxonomy
    identity_names = taxonomy.identity_names
    view_level = [c.name for c in taxonomy.columns[taxonomy.num_identity :]]
    identity_counts = {name: Counter() for name in identity_names}
    view_counts = {name: Counter() for name in view_level}
    views = 0
    for pid in range(identities):
        attributes = engine.identity(pid).attributes
        for name in identity_names:
            identity_counts[name][attributes[name]] += 1
    for view in engine.iter_views(range(identities)):
        views += 1
        attributes = view.attributes
        for name in view_level:
            view_counts[name][attributes[name]] += 1
    dimensions = []
    camera_columns = {taxonomy.columns[c].name for c in taxonomy.camera_columns}
    for name in identity_names:
        counts = {value: identity_counts[name][value] for value in taxonomy.values(name)}
        dimensions.append(DimensionCoverage(name, "identity", counts, identities))
    for name in view_level:
        counts = {value: view_counts[name][value] for value in taxonomy.values(name)}
        dimensions.append(
            DimensionCoverage(name, "camera" if name in camera_columns else "view", counts, views)
        )
    return Coverage(identities, views, tuple(dimensions))


def print_coverage(coverage: Coverage, console: Any) -> None:
    table = Table(title=f"Attribute coverage: {coverage.identities} identities, {coverage.views} views")
    table.add_column("dimension")
    table.add_column("per")
    table.add_column("value")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for dim in coverage.dimensions:
        per = "identity" if dim.level == "identity" else "view"
        for i, (value, count) in enumerate(dim.counts.items()):
            share = f"{100 * count / dim.total:.1f}%" if dim.total else "-"
            style = "red" if count == 0 else None
            table.add_row(
                dim.name if i == 0 else "", per if i == 0 else "", value, str(count), share, style=style
            )
        table.add_section()
    console.print(table)
    values = sum(len(d.counts) for d in coverage.dimensions)
    covered = sum(d.covered for d in coverage.dimensions)
    console.print(f"{covered} of {values} attribute values seen at least once")
    for dim in coverage.dimensions:
        if dim.missing:
            console.print(f"[red]never sampled[/red] {dim.name}: {', '.join(dim.missing)}")


def plot_coverage(coverage: Coverage, path: Path) -> None:
    """A bar chart per dimension (share of identities or views per value), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = coverage.dimensions
    cols = 4
    rows = -(-len(dims) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 4.2, rows * 3.2), squeeze=False)
    for ax, dim in zip(axes.flat, dims, strict=False):
        values = list(dim.counts)
        shares = [100 * dim.counts[v] / dim.total if dim.total else 0 for v in values]
        colours = ["tab:red" if dim.counts[v] == 0 else "tab:blue" for v in values]
        ax.barh(range(len(values)), shares, color=colours)
        ax.set_yticks(range(len(values)), values, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(f"{dim.name} (% of {'identities' if dim.level == 'identity' else 'views'})", fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    for ax in list(axes.flat)[len(dims) :]:
        ax.axis("off")
    fig.suptitle(f"Attribute coverage: {coverage.identities} identities, {coverage.views} views")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=90)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def coverage_report(
    engine: PromptEngine, identities: int, console: Any, *, plot: Path | None = None
) -> Coverage:
    """Sample pids 0 .. identities - 1, print the coverage table, and draw it to `plot` (PNG) if given."""
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise SettingError("plot", f"writes a PNG: give a path ending in .png, got {plot}")
        if not plot.parent.is_dir():
            raise SettingError("plot", f"folder {plot.parent} does not exist")
    coverage = measure_coverage(engine, identities)
    print_coverage(coverage, console)
    if plot is not None:
        plot_coverage(coverage, plot)
        console.print(f"plot written to {plot}")
    return coverage
