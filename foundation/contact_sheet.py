"""Contact sheets: a grid of images, each with a caption strip under it.

Used for the renderer's documentation sheet and by `dppp shards grid` to look at shards. Images of any
size and mode are accepted: each is fitted (aspect kept, centred) into a tile of the tile size, which
defaults to the largest image's size.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from dppp.foundation.errors import UserError

LINE_HEIGHT = 12  # PIL's default font is drawn about 12 px tall


def make_contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    columns: int = 8,
    *,
    tile_size: tuple[int, int] | None = None,
    caption_lines: int = 2,
    gap: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
    text_colour: tuple[int, int, int] = (20, 20, 20),
    title: str | None = None,
) -> Image.Image:
    """Tile `images` left to right, top to bottom, `columns` per row, with `captions[i]` under image i.

    tile_size is (width, height) of the image area of a tile; captions are wrapped to the tile width and
    cut to `caption_lines` lines (a cut line ends with "..."). `title`, when given, heads the sheet.
    """
    if len(images) != len(captions):
        raise UserError(f"contact sheet: {len(images)} images but {len(captions)} captions")
    if not images:
        raise UserError("contact sheet: no images to show")
    if columns < 1:
        raise UserError(f"contact sheet: columns must be at least 1, got {columns}")
    if tile_size is None:
        tile_size = (max(im.width for im in images), max(im.height for im in images))
    tile_w, tile_h = tile_size
    font = ImageFont.load_default()
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    caption_h = caption_lines * LINE_HEIGHT + 4 if caption_lines > 0 else 0
    title_h = LINE_HEIGHT + 2 * gap if title else 0
    sheet_w = columns * tile_w + (columns + 1) * gap
    sheet_h = title_h + rows * (tile_h + caption_h) + (rows + 1) * gap
    sheet = Image.new("RGB", (sheet_w, sheet_h), background)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((gap, gap), title, fill=text_colour, font=font)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        row, col = divmod(i, columns)
        x = gap + col * (tile_w + gap)
        y = title_h + gap + row * (tile_h + caption_h + gap)
        fitted = _fit(image, tile_w, tile_h)
        sheet.paste(fitted, (x + (tile_w - fitted.width) // 2, y + (tile_h - fitted.height) // 2))
        for k, line in enumerate(_wrap(draw, font, caption, tile_w, caption_lines)):
            draw.text((x + 1, y + tile_h + 2 + k * LINE_HEIGHT), line, fill=text_colour, font=font)
    return sheet


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image in RGB, scaled to fit width x height with its aspect ratio kept."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size == (width, height):
        return image
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)


def _wrap(draw, font, text: str, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to a pixel width; words longer than a line are cut character by character."""
    if max_lines <= 0:
        return []
    lines: list[str] = []
    current = ""
    words = text.replace("\n", " ").split(" ")
    for word in words:
        candidate = f"{current} {word}" if current else word
        if draw.textlength(candidate, font=font) <= width - 2:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while draw.textlength(current, font=font) > width - 2 and len(current) > 1:
            cut = len(current)
            while cut > 1 and draw.textlength(current[:cut], font=font) > width - 2:
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and draw.textlength(last + "...", font=font) > width - 2:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "..."]
    return lines
