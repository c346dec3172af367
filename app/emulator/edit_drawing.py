"""Placeholder pictures for the emulator's "edited" images: visibly made from the inputs.

Owns `draw_edit`. An edit's result is the first input image stretched to the output size (so
the mask, which has the first image's size, maps onto it exactly), the other input images as
small numbered tiles along the bottom edge, the mask's fully transparent area repainted with
bold magenta and yellow stripes and the prompt, a magenta frame around the whole picture, and
drawing.py's dark title and footer bands ("ATELIER EMULATOR · edited image"). Without a mask
the prompt sits in a panel under the title, so the picture itself stays recognisable. A person
sees at a glance which inputs were used; a test can check pixels: outside the mask (and the
bands, frame and tiles) the output is the input, inside it the stripes.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .drawing import draw_bands, draw_prompt_panel, parse_size

EDIT_TITLE = "ATELIER EMULATOR · edited image"
# The masked area's stripes and the frame: colours no photograph is made of.
STRIPE_COLOURS = ((255, 0, 200), (255, 230, 0))
FRAME_COLOUR = (255, 0, 200)
# A tile is this fraction of the output's short side.
TILE_FRACTION = 6


def draw_edit(
    prompt: str,
    index: int,
    n: int,
    size: str,
    *,
    images: Sequence[Image.Image],
    mask: Image.Image | None,
    model: str,
    transparent: bool,
) -> Image.Image:
    """Edited image `index` (0-based) of `n`, `size` = "WxH": RGBA when `transparent` (the
    first image's own transparency kept), else RGB (transparency flattened onto white)."""
    width, height = parse_size(size)
    picture = _as_mode(images[0], "RGBA" if transparent else "RGB").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    draw = ImageDraw.Draw(picture, "RGBA")
    stripe = max(8, min(width, height) // 24)
    if mask is not None:
        area = _edit_area(mask, (width, height))
        box = area.getbbox()
        if box is not None:
            # A different stripe phase per image, so the n results are told apart.
            picture.paste(_stripes(width, height, stripe, index), mask=area)
            draw_prompt_panel(
                draw, box, prompt, max(9, min(width, (box[2] - box[0])) // 18), padding=4
            )
    else:
        margin = max(4, width // 32)
        top = max(9, width // 26) + 2 * margin
        draw_prompt_panel(
            draw,
            (margin, top, width - margin, top + height // 5),
            prompt,
            max(9, width // 30),
            padding=margin,
        )
    _draw_tiles(picture, draw, images[1:])
    frame = max(4, min(width, height) // 64)
    draw.rectangle((0, 0, width - 1, height - 1), outline=FRAME_COLOUR, width=frame)
    inputs = f"{len(images)} input image{'s' if len(images) > 1 else ''}"
    inputs += " + mask" if mask is not None else ", no mask"
    draw_bands(
        draw,
        width,
        height,
        EDIT_TITLE,
        f"{model} · edit {index + 1} of {n} · {size} · {inputs}",
    )
    return picture


def _as_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` as RGBA, or as RGB with any transparency flattened onto white."""
    rgba = image.convert("RGBA")
    if mode == "RGBA":
        return rgba
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _edit_area(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An "L" image of `size`: 255 where the mask is fully transparent (the area to edit)."""
    alpha = mask.convert("RGBA").getchannel("A")
    area = alpha.point(lambda value: 255 if value == 0 else 0)
    return area.resize(size, Image.Resampling.NEAREST)


def _stripes(width: int, height: int, stripe: int, phase: int) -> Image.Image:
    """Diagonal stripes of STRIPE_COLOURS, `stripe` pixels wide, over the whole picture."""
    stripes = Image.new("RGB", (width, height), STRIPE_COLOURS[0])
    draw = ImageDraw.Draw(stripes)
    offset = (phase % 2) * stripe
    for start in range(-height - 2 * stripe + offset, width, 2 * stripe):
        draw.polygon(
            [
                (start, height),
                (start + stripe, height),
                (start + stripe + height, 0),
                (start + height, 0),
            ],
            fill=STRIPE_COLOURS[1],
        )
    return stripes


def _draw_tiles(
    picture: Image.Image, draw: ImageDraw.ImageDraw, references: Sequence[Image.Image]
) -> None:
    """The other input images as numbered square tiles above the footer band, left to right,
    in rows upwards when one row is full."""
    width, height = picture.size
    tile = max(24, min(width, height) // TILE_FRACTION)
    gap = max(2, tile // 12)
    per_row = max(1, (width - gap) // (tile + gap))
    bottom = height - max(8, width // 30) - max(4, width // 32) - gap
    font = ImageFont.load_default(size=max(8, tile // 5))
    for number, reference in enumerate(references):
        row, column = divmod(number, per_row)
        left = gap + column * (tile + gap)
        top = bottom - (row + 1) * (tile + gap)
        thumbnail = ImageOps.fit(_as_mode(reference, picture.mode), (tile, tile))
        draw.rectangle((left - 2, top - 2, left + tile + 1, top + tile + 1), fill="white")
        picture.paste(thumbnail, (left, top))
        draw.text((left + 3, top + 2), str(number + 2), font=font, fill=FRAME_COLOUR)
