"""`dppp eval --ranks OUT.png`: queries with their top-k gallery images, true matches framed green,
others red (trainer/evaluation/rank_picture.py), on the Market-1501 folder every model retrieves perfectly."""

from __future__ import annotations

from PIL import Image

from dppp.cli import main
from dppp.trainer.evaluation.rank_picture import MATCH_FRAME, MISS_FRAME, QUERY_FRAME
from tests.trainer.test_eval import MARKET_PIDS, market_dir, model_dir, synthetic_url  # noqa: F401 (fixtures)


def test_ranks_picture_frames_true_matches_green_and_others_red(model_dir, market_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "ranks.png"
    args = ["eval", str(model_dir), "--dataset", f"market1501:{market_dir}", "--ranks", str(out)]
    assert main([*args, "--ranks-top-k", "4"]) == 0, capsys.readouterr().err
    assert f"ranked results: {out}" in capsys.readouterr().out
    with Image.open(out) as picture:
        image = picture.convert("RGB")
    # Layout of draw_ranks: a title band of 18 px, rows of 136 px (128 + two 4-px frames) 4 px apart,
    # the query box 72 px wide, a 16-px gap, then gallery boxes 72 px wide, 4 px apart.
    rows = len(MARKET_PIDS)
    assert image.size == (72 * 5 + 16 + 4 * 4, 18 + (136 + 4) * rows)
    for row in range(rows):
        y = 18 + row * 140 + 1
        assert image.getpixel((1, y)) == QUERY_FRAME
        frames = [image.getpixel((72 + 16 + rank * 76 + 1, y)) for rank in range(4)]
        # Each person: 3 gallery images, one from the query's own camera (left out by the protocol),
        # so two true matches ranked first (identical pictures), then other people.
        assert frames == [MATCH_FRAME, MATCH_FRAME, MISS_FRAME, MISS_FRAME]


def test_ranks_on_a_synthetic_dataset_and_one_picture_per_dataset(
    model_dir,  # noqa: F811
    market_dir,  # noqa: F811
    synthetic_url,  # noqa: F811
    tmp_path,
):
    out = tmp_path / "r.png"
    specs = ["--dataset", f"synthetic:{synthetic_url}", "--dataset", f"market1501:{market_dir}"]
    assert main(["eval", str(model_dir), *specs, "--ranks", str(out), "--ranks-queries", "3"]) == 0
    for number in (1, 2):
        with Image.open(tmp_path / f"r-{number}.png") as picture:
            assert picture.format == "PNG" and picture.height == 18 + 140 * 3
    assert not out.exists()
