"""Placeholder pictures for the emulator's "generated" images.

Owns `render_placeholder`, which draws a real image of the requested size that nobody could
mistake for a generated image: a colour gradient derived from the prompt (so different prompts
look different at a glance in the gallery), a few shapes, a label saying it is a placeholder,
the prompt itself, the model and which image of how many it is. PNG by default; JPEG or WebP
at a given quality, and a transparent background (no gradient, alpha channel) on request.
Pure functions, no caching: callers cache. `draw_placeholder` is the same picture before it
is encoded (`encode_image`), and `draw_bands` / `draw_prompt_panel` the labelling that
edit_drawing.py shares for edited images.
"""

from __future__ import annotations

import hashlib
import io
import random
import unicodedata

from PIL import Image, ImageDraw, ImageFont

TITLE = "ATELIER EMULATOR · placeholder image"
# Long prompts are cut to this many lines; the full prompt is in the operation anyway.
MAX_PROMPT_LINES = 6
# More characters than six lines ever hold, even of the narrowest glyphs. Wrapping measures text
# piece by piece, so a 32000-character gpt-image prompt is cut to this first.
MAX_DRAWN_PROMPT_CHARS = 2000
# Level 1: a 1024x1024 placeholder encodes in ~19 ms instead of ~27 at level 6, for files about
# a third larger (the emulator shares the machine with the app it serves: bench.pipeline).
PNG_COMPRESS_LEVEL = 1
# WebP's fastest effort (Pillow's default is 4): a 3840x2160 placeholder encodes in ~170 ms
# instead of ~320, for files about twice as large. Placeholders need speed, not small files.
WEBP_METHOD = 0


def parse_size(size: str) -> tuple[int, int]:
    """`"512x512"` -> `(512, 512)`."""
    width, _, height = size.partition("x")
    return int(width), int(height)


def render_placeholder(
    prompt: str,
    index: int,
    n: int,
    size: str,
    *,
    model: str = "dall-e-2",
    output_format: str = "png",
    quality: int = 100,
    transparent: bool = False,
) -> bytes:
    """Image bytes of placeholder `index` (0-based) of `n` for `prompt`, `size` = "WxH".

    `output_format` is "png", "jpeg" or "webp"; `quality` (0-100) applies to JPEG and WebP.
    `transparent` leaves the background fully transparent (PNG and WebP keep the alpha channel;
    JPEG has none, so it is flattened onto white). Deterministic: the same arguments give the
    same bytes (for one Pillow version).
    """
    image = draw_placeholder(prompt, index, n, size, model=model, transparent=transparent)
    return encode_image(image, output_format, quality)


def draw_placeholder(
    prompt: str, index: int, n: int, size: str, *, model: str, transparent: bool
) -> Image.Image:
    """The picture `render_placeholder` encodes: RGBA when `transparent`, else RGB."""
    width, height = parse_size(size)
    if transparent:
        image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        # On an RGBA image drawing writes colour and alpha as given: shapes stay translucent.
        draw = ImageDraw.Draw(image)
    else:
        prompt_digest = hashlib.sha256(prompt.encode("utf-8")).digest()
        image = _gradient(
            width,
            height,
            _soft_colour(prompt_digest[0:3]),
            _soft_colour(prompt_digest[3:6]),
        )
        # RGBA drawing on an RGB image blends the fill colours' alpha into the background.
        draw = ImageDraw.Draw(image, "RGBA")
    _draw_shapes(draw, width, height, random.Random(f"{prompt}\x00{index}"))
    draw_bands(draw, width, height, TITLE, f"{model} · image {index + 1} of {n} · {size}")
    margin = max(4, width // 32)
    draw_prompt_panel(
        draw, (margin, 0, width - margin, height), prompt, max(9, width // 22), padding=margin
    )
    return image


def encode_image(image: Image.Image, output_format: str, quality: int) -> bytes:
    """`image` as "png", "jpeg" or "webp" bytes; `quality` (0-100) for JPEG and WebP. An RGBA
    image is flattened onto white for JPEG."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif output_format == "jpeg":
        if image.mode == "RGBA":
            flat = Image.new("RGB", image.size, "white")
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image.save(buffer, "JPEG", quality=quality)
    elif output_format == "webp":
        image.save(buffer, "WEBP", quality=quality, method=WEBP_METHOD)
    else:
        raise ValueError(f"unsupported output format {output_format!r}")
    return buffer.getvalue()


def _soft_colour(three_bytes: bytes) -> tuple[int, int, int]:
    """Map hash bytes to a mid-bright colour, so white and dark text both stay readable."""
    return tuple(70 + byte * 150 // 255 for byte in three_bytes)  # type: ignore[return-value]


def _gradient(
    width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> Image.Image:
    """A vertical gradient from `top` to `bottom`.

    Blended in one column of Pillow's 256-step gradient, stretched to the height, then copied
    across the width: the same picture as composing two full-size images through a full-size
    mask, but a 3840x2160 one takes ~15 ms instead of ~85.
    """
    mask = Image.linear_gradient("L").crop((0, 0, 1, 256))
    column = Image.composite(
        Image.new("RGB", mask.size, bottom),
        Image.new("RGB", mask.size, top),
        mask,
    ).resize((1, height), Image.Resampling.BILINEAR)
    return column.resize((width, height), Image.Resampling.NEAREST)


def _draw_shapes(draw: ImageDraw.ImageDraw, width: int, height: int, rng: random.Random) -> None:
    for _ in range(rng.randint(3, 6)):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256), 110)
        x0, y0 = rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        extent = rng.uniform(0.15, 0.45) * min(width, height)
        box = (x0, y0, x0 + extent, y0 + extent)
        kind = rng.choice(("ellipse", "rectangle", "triangle"))
        if kind == "ellipse":
            draw.ellipse(box, fill=colour)
        elif kind == "rectangle":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon(
                [(x0, y0 + extent), (x0 + extent / 2, y0), (x0 + extent, y0 + extent)],
                fill=colour,
            )


def draw_bands(draw: ImageDraw.ImageDraw, width: int, height: int, title: str, footer: str) -> None:
    """The dark title band across the top (the part that says "this is not a real
    generation") and the footer band across the bottom."""
    margin = max(4, width // 32)
    title_font = ImageFont.load_default(size=max(9, width // 26))
    footer_font = ImageFont.load_default(size=max(8, width // 30))

    title_height = title_font.size + 2 * margin // 2
    draw.rectangle((0, 0, width, title_height + margin // 2), fill=(20, 20, 28, 215))
    draw.text(
        (width / 2, (title_height + margin // 2) / 2),
        title,
        font=title_font,
        fill="white",
        anchor="mm",
    )

    footer_top = height - footer_font.size - margin
    draw.rectangle((0, footer_top, width, height), fill=(20, 20, 28, 215))
    draw.text(
        (width / 2, (footer_top + height) / 2),
        footer,
        font=footer_font,
        fill="white",
        anchor="mm",
    )


def draw_prompt_panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    prompt: str,
    font_size: int,
    *,
    padding: float,
) -> None:
    """The prompt, wrapped, on a translucent white panel centred vertically in `box` and as
    wide as it (left, top, right, bottom); the text keeps `padding` from the panel's sides."""
    left, top, right, bottom = box
    margin = padding
    prompt_font = ImageFont.load_default(size=font_size)
    text = _drawable(prompt.strip()[:MAX_DRAWN_PROMPT_CHARS], prompt_font) or "(empty prompt)"
    lines = _wrap(text, prompt_font, right - left - 2 * margin, MAX_PROMPT_LINES)
    line_height = prompt_font.size * 1.25
    block_height = line_height * len(lines)
    text_top = (top + bottom - block_height) / 2
    draw.rectangle(
        (left, text_top - margin / 2, right, text_top + block_height + margin / 2),
        fill=(255, 255, 255, 170),
    )
    centre = (left + right) / 2
    for number, line in enumerate(lines):
        y = text_top + line_height * (number + 0.5)
        draw.text((centre, y), line, font=prompt_font, fill=(20, 20, 28), anchor="mm")


_PUNCTUATION_FALLBACKS = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'"}


def _drawable(text: str, font: ImageFont.FreeTypeFont) -> str:
    """Replace characters the built-in font has no glyph for, so no tofu boxes are drawn.

    Pillow's default font covers little beyond ASCII; accented letters fall back to their base
    letter ("café" -> "cafe"), anything else becomes "?".
    """
    missing_glyph = bytes(font.getmask("\uffff"))
    replacements: dict[str, str] = {}
    for char in set(text):
        if char.isspace() or bytes(font.getmask(char)) != missing_glyph:
            replacements[char] = char
            continue
        base = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
        replacements[char] = base or _PUNCTUATION_FALLBACKS.get(char, "?")
    return "".join(replacements[char] for char in text)


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap by rendered width; words wider than a line are split by characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:
            if font.getlength(current + char) > max_width and current:
                lines.append(current)
                current = ""
            current += char
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > max_width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "…"
    return lines
