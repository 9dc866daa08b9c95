"""Benchmark: the prompt engine's sampling + templating rate on one core, against a naive sampler.

    .venv/bin/python benchmarks/bench_prompts.py [--identities 5000 --baseline-views 3000 --repeats 3]

Runs pinned to one CPU core with single-threaded numpy. Measured on the GenePerson config's prompt settings
(~19.65 views per identity, CLIP's 77-token budget, the default token estimate):
- identity table: candidate draws, de-duplication and the appearance check, per identity;
- views (bulk): `PromptEngine.iter_views`, i.e. ViewSpecs with attributes, prompt, negative prompt and
  dropped slots, what a renderer worker or `dppp prompts sample` consumes;
- views (one by one): `PromptEngine.view(pid, view)`, random access;
- JSON lines: `dppp prompts sample`'s serialisation on top of the bulk path.
Baseline, measured in the same run: the obvious implementation of the same sampling, one numpy Generator
per view and `Generator.choice` per dimension with the rule weights recomputed for every draw, and the
prompt formatted with the same template phrases but without phrase caching (same distributions, its own
random streams).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import timed  # noqa: E402

from dppp.config import load_experiment  # noqa: E402
from dppp.prompts.engine import PromptEngine  # noqa: E402
from dppp.prompts.taxonomy import load_taxonomy  # noqa: E402


def naive_views(engine: PromptEngine, pid: int, count: int) -> list[tuple[dict[str, str], str]]:
    """The baseline: per view a fresh Generator and per dimension a choice over freshly computed weights."""
    taxonomy = engine.taxonomy
    identity = engine._codes[pid].tolist()
    out = []
    for view in range(count):
        rng = np.random.default_rng([engine.seed, pid, view])
        row = identity + [0] * (len(taxonomy.columns) - len(identity))
        camera = int(
            rng.choice(len(taxonomy.cameras), p=taxonomy.camera_weights / taxonomy.camera_weights.sum())
        )
        for offset, column in enumerate(taxonomy.camera_columns):
            row[column] = int(taxonomy.camera_codes[camera][offset])
        for dim in taxonomy.view_dims:
            weights = dim.weights.copy()
            for condition, factors in dim.rules:
                if condition.holds_row(row):
                    weights = weights * factors
            row[dim.column] = int(rng.choice(len(weights), p=weights / weights.sum()))
        attributes = {column.name: column.values[row[i]] for i, column in enumerate(taxonomy.columns)}
        phrases = []
        for slot in engine.positive.template.slots:
            for variant in slot.variants:
                if variant.condition is None or variant.condition.holds_row(row):
                    text = engine.positive.render_text(variant, row)
                    if text:
                        phrases.append(text)
                    break
        out.append((attributes, ", ".join(phrases)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/geneperson.yaml")
    parser.add_argument("--identities", type=int, default=5000)
    parser.add_argument("--baseline-views", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    generate = load_experiment(args.config).generate
    taxonomy = load_taxonomy(generate.prompts.taxonomy)
    n = args.identities
    print(
        f"machine: {os.cpu_count()} CPUs visible, pinned to 1 core; config {args.config} "
        f"(views {generate.prompts.views.distribution} mean {generate.prompts.views.mean})"
    )

    def build():
        return PromptEngine(taxonomy, generate.prompts, generate.seed, identities=n)

    engine, wall, cpu = timed(build, args.repeats)
    print(f"identity table   : {n:>7} identities  {n / cpu:>10,.0f} identities/s CPU  ({n / wall:,.0f} wall)")

    def bulk(fresh: PromptEngine) -> int:
        return sum(1 for _ in fresh.iter_views(range(n)))

    # A fresh engine each run (cold phrase caches, like a new worker), built untimed: its table is timed above.
    views, wall, cpu = timed(bulk, args.repeats, setup=build)
    bulk_rate = views / cpu
    print(
        f"views (bulk)     : {views:>7} views       {bulk_rate:>10,.0f} views/s CPU  ({views / wall:,.0f} wall)"
    )

    pairs = [(pid, view) for pid in range(0, n, 7) for view in range(engine.num_views(pid))][
        : args.baseline_views
    ]
    _, wall, cpu = timed(lambda: [engine.view(pid, view) for pid, view in pairs], args.repeats)
    single_rate = len(pairs) / cpu
    print(
        f"views (one by one): {len(pairs):>6} views       {single_rate:>10,.0f} views/s CPU  ({len(pairs) / wall:,.0f} wall)"
    )

    def lines():
        return sum(len(json.dumps(v.record(), ensure_ascii=False)) for v in engine.iter_views(range(n)))

    _, wall, cpu = timed(lines, 1)
    print(
        f"JSON lines       : {views:>7} lines       {views / cpu:>10,.0f} lines/s CPU  ({views / wall:,.0f} wall)"
    )

    budget = args.baseline_views
    plan, total = [], 0
    for pid in range(n):
        count = min(engine.num_views(pid), budget - total)
        if count <= 0:
            break
        plan.append((pid, count))
        total += count
    _, wall, cpu = timed(lambda: [naive_views(engine, pid, count) for pid, count in plan], args.repeats)
    naive_rate = total / cpu
    print(
        f"baseline (naive) : {total:>7} views       {naive_rate:>10,.0f} views/s CPU  ({total / wall:,.0f} wall)"
    )
    print(
        f"ratio bulk / naive: {bulk_rate / naive_rate:.1f}x   one-by-one / naive: {single_rate / naive_rate:.1f}x"
    )
    print(f"10 M views (bulk, one core): {1e7 / bulk_rate / 60:.1f} min")


if __name__ == "__main__":
    main()
