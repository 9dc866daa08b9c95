"""Contact sheets: tiles in a grid, each with its caption, any image size or mode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from dppp.foundation.contact_sheet import _wrap, make_contact_sheet
from dppp.foundation.errors import UserError


def solid(colour, size=(32, 64), mode="RGB"):
    return Image.new(mode, size, colour)


def test_grid_layout_places_each_image_in_its_tile():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    sheet = make_contact_sheet(
        [solid(c) for c in colours], [f"img {i}" for i in range(5)], columns=2, gap=4, caption_lines=1
    )
    caption_h = 12 + 4
    assert sheet.size == (2 * 32 + 3 * 4, 3 * (64 + caption_h) + 4 * 4)
    for i, colour in enumerate(colours):
        row, col = divmod(i, 2)
        x = 4 + col * (32 + 4) + 16
        y = 4 + row * (64 + caption_h + 4) + 32
        assert sheet.getpixel((x, y)) == colour
    # The sixth slot of the last row stays background.
    assert sheet.getpixel((4 + 36 + 16, 4 + 2 * (64 + caption_h + 4) + 32)) == (255, 255, 255)


def test_captions_are_drawn_under_the_tiles():
    with_text = make_contact_sheet([solid((0, 0, 0))], ["p000001 cam 3"], columns=8)
    without = make_contact_sheet([solid((0, 0, 0))], [""], columns=8)
    strip = np.asarray(with_text)[4 + 64 :, :]
    assert (strip < 128).any()  # dark text pixels in the caption strip
    assert (np.asarray(without)[4 + 64 :, :] == 255).all()


def test_mixed_sizes_and_modes_are_fitted_into_the_tile():
    images = [
        solid((200, 10, 10), (64, 128)),
        solid(77, (16, 16), mode="L"),
        solid((0, 0, 0, 0), (8, 32), "RGBA"),
    ]
    sheet = make_contact_sheet(images, ["a", "b", "c"], columns=3, tile_size=(32, 64), title="mixed")
    assert sheet.mode == "RGB"
    assert sheet.width == 3 * 32 + 4 * 4


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="2 images but 1 captions"):
        make_contact_sheet([solid((0, 0, 0)), solid((0, 0, 0))], ["x"])
    with pytest.raises(UserError, match="no images"):
        make_contact_sheet([], [])
    with pytest.raises(UserError, match="columns"):
        make_contact_sheet([solid((0, 0, 0))], ["x"], columns=0)


def test_long_captions_wrap_and_are_cut_with_an_ellipsis():
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = ImageFont.load_default()
    lines = _wrap(draw, font, "front-right three-quarter | night under streetlights in heavy rain", 80, 2)
    assert len(lines) == 2 and lines[-1].endswith("...")
    assert all(draw.textlength(line, font=font) <= 78 for line in lines)
    assert _wrap(draw, font, "short", 80, 2) == ["short"]
    assert (
        _wrap(draw, font, "averyveryverylongwordwithoutspaces", 40, 5)[0]
        != "averyveryverylongwordwithoutspaces"
    )
