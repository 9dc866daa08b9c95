"""Ranked results as a picture (`dppp eval --ranks OUT.png`), after torchreid's visualize_ranked_results.

One row per query: the query image (framed grey), then its top-k gallery images in rank order, each
framed green when it shows the query's person and red when it does not. The gallery images the protocol
leaves out of a query's ranking (its person seen by its own camera: `evaluate_ranking`'s junk) are left
out here too, so the row is the ranking the figures score. Queries without a true match from another
camera are skipped, as the figures skip them; the drawn ones are spread evenly over the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dppp.trainer.data.readers import synthetic_images

QUERY_FRAME = (128, 128, 128)
MATCH_FRAME = (0, 170, 0)
MISS_FRAME = (220, 0, 0)
BACKGROUND = (255, 255, 255)


def ranked_rows(
    distmat: np.ndarray,
    q_pids: Sequence[int],
    g_pids: Sequence[int],
    q_camids: Sequence[int],
    g_camids: Sequence[int],
    *,
    queries: int,
    top_k: int,
) -> list[tuple[int, list[tuple[int, bool]]]]:
    """(query index, [(gallery index, true match), ...top_k]) for `queries` valid queries spread evenly."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    rows = []
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        kept = order[~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))]
        matches = g_pids[kept] == q_pids[q]
        if matches.any():  # a valid query under the protocol
            rows.append((q, [(int(g), bool(m)) for g, m in zip(kept[:top_k], matches[:top_k], strict=True)]))
    if len(rows) > queries:
        picks = np.linspace(0, len(rows) - 1, queries).round().astype(int)
        rows = [rows[i] for i in picks]
    return rows


def draw_ranks(
    rows: list[tuple[int, list[tuple[int, bool]]]],
    images: Callable[[str, list[int]], dict[int, Any]],
    out: str | Path,
    *,
    title: str = "",
    cell: tuple[int, int] = (128, 64),
) -> Path:
    """Draw `rows` into the PNG `out`. `images(part, indices)` gives {index: PIL image} of the "query" or
    "gallery" images named. `cell` is each image's (height, width); a 4-pixel frame goes round it."""
    height, width = cell
    border, gap, label = 4, 16, 18
    top_k = max((len(r) for _, r in rows), default=0)
    query_images = images("query", [q for q, _ in rows])
    gallery_images = images("gallery", sorted({g for _, r in rows for g, _ in r}))
    box_w, box_h = width + 2 * border, height + 2 * border
    canvas = Image.new(
        "RGB",
        (box_w * (top_k + 1) + gap + border * top_k, label + (box_h + border) * max(1, len(rows))),
        BACKGROUND,
    )
    pen = ImageDraw.Draw(canvas)
    pen.text((2, 2), title or "query | top-k gallery (green: same person, red: another)", fill=(0, 0, 0))

    def paste(image, x: int, y: int, frame) -> None:
        pen.rectangle([x, y, x + box_w - 1, y + box_h - 1], fill=frame)
        canvas.paste(image.convert("RGB").resize((width, height)), (x + border, y + border))

    for row, (q, ranked) in enumerate(rows):
        y = label + row * (box_h + border)
        paste(query_images[q], 0, y, QUERY_FRAME)
        for rank, (g, match) in enumerate(ranked):
            paste(
                gallery_images[g],
                box_w + gap + rank * (box_w + border),
                y,
                MATCH_FRAME if match else MISS_FRAME,
            )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return out


def rank_drawer(split, source, target: Path, spec: str, storage_config, queries: int, top_k: int):
    """A callback for `dppp eval` drawing the picture of `split` (a ReidSplit of `source`) into `target`
    from its query x gallery distance matrix."""

    def images(part: str, indices: list[int]) -> dict[int, Any]:
        items = [(split.query if part == "query" else split.gallery)[i] for i in indices]
        if source.is_dataset:
            pictures = synthetic_images(source.path, items, storage_config=storage_config)
        else:
            pictures = (Image.open(item.path).convert("RGB") for item in items)
        return dict(zip(indices, pictures, strict=True))

    def draw(distmat) -> None:
        rows = ranked_rows(
            distmat,
            [i.pid for i in split.query],
            [i.pid for i in split.gallery],
            [i.camid for i in split.query],
            [i.camid for i in split.gallery],
            queries=queries,
            top_k=top_k,
        )
        title = f"{spec}: query | top-{top_k} gallery (green: same person, red: another)"
        draw_ranks(rows, images, target, title=title)

    return draw
