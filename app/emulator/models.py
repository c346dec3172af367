"""The image models the emulator knows, and what each one accepts and reports.

Owns `ModelRules` and the `MODELS` table (limits from azure-image-apis.md §3.2, §4.2, the
checklist in §7 item 13 and, for the gpt-image-2 family, §9), the gpt-image-2 family's size
rules (`size_problem`), plus the per-model numbers a response carries: DALL-E 3's
`revised_prompt` and the gpt-image models' token `usage`. Which fields a request may set, and
in which shape, is decided from these rules by image_requests.py.

The emulator keeps its own rules on purpose, independent of the app's app/image_models.py: it
stands in for the service, so a mistake in the app's rules must not be copied into it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# gpt-image `size: auto` and `quality: auto` are resolved to these before drawing and counting.
# Guess (UNCONFIRMED in azure-image-apis.md §3.2: docs say gpt-image-1 defaults to `high` and
# gpt-image-1-mini to `medium`): the emulator picks a square image at medium quality for every
# gpt-image model, so responses and token counts stay predictable.
AUTO_SIZE = "1024x1024"
AUTO_QUALITY = "medium"
AUTO_BACKGROUND = "opaque"

# Output tokens per image by (quality, size). Guess (not in azure-image-apis.md): the figures of
# OpenAI's published gpt-image-1 pricing table, used for every gpt-image model.
OUTPUT_TOKENS_PER_IMAGE = {
    ("low", "1024x1024"): 272,
    ("low", "1024x1536"): 408,
    ("low", "1536x1024"): 400,
    ("medium", "1024x1024"): 1056,
    ("medium", "1024x1536"): 1584,
    ("medium", "1536x1024"): 1568,
    ("high", "1024x1024"): 4160,
    ("high", "1024x1536"): 6240,
    ("high", "1536x1024"): 6208,
}
# Output tokens of one 1024x1024 image per quality, for sizes the table above does not have: the
# count is scaled by pixel area. Guess (not in azure-image-apis.md, which gives no token counts
# for gpt-image-2's free sizes nor for the 2.5 models' `xhigh` and `max`): area scaling, and
# `xhigh` / `max` at twice / four times `high`.
OUTPUT_TOKENS_PER_MEGAPIXEL_SQUARE = {
    "low": 272,
    "medium": 1056,
    "high": 4160,
    "xhigh": 8320,
    "max": 16640,
}
SQUARE_PIXELS = 1024 * 1024
# An edit with `size: auto` on a model with fixed sizes gets the square one unless the first
# image is wider or taller than this ratio.
EDIT_SQUARE_RATIO = 1.2
# `input_fidelity` per model, edits only: "Supports `high` and `low` on `gpt-image-1.5`;
# `gpt-image-1-mini` supports only `low`. For `gpt-image-2`, omit this parameter"
# (openai-python 3.51; azure-image-apis.md §9). Guess: gpt-image-1 takes both, as 1.5 does.
INPUT_FIDELITIES: dict[str, tuple[str, ...]] = {
    "gpt-image-1": ("low", "high"),
    "gpt-image-1.5": ("low", "high"),
    "gpt-image-1-mini": ("low",),
}


@dataclass(frozen=True)
class SizeRule:
    """Free `WIDTHxHEIGHT` sizes (the gpt-image-2 family, azure-image-apis.md §9)."""

    multiple_of: int
    max_side: int
    max_ratio: int
    min_pixels: int
    max_pixels: int


# "Both sides divisible by 16, aspect ratio between 1:3 and 3:1, longest edge at most 3840,
# total pixels 655,360 to 8,294,400" (azure-image-apis.md §9; openai-python 3.51's docstring
# agrees). Guess (UNCONFIRMED in azure-image-apis.md for Azure): Azure deployments take the same
# sizes as OpenAI.
GPT_IMAGE_2_SIZE_RULE = SizeRule(
    multiple_of=16, max_side=3840, max_ratio=3, min_pixels=655_360, max_pixels=8_294_400
)
_SIZE = re.compile(r"([1-9][0-9]{0,5})x([1-9][0-9]{0,5})")


@dataclass(frozen=True)
class ModelRules:
    """What one model accepts. The first entry of `sizes` and `qualities` is the default."""

    name: str
    max_prompt_chars: int
    max_images: int
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    # Empty: the model has no `style` field.
    styles: tuple[str, ...] = ()
    # gpt-image models: always base64, token usage, background/output_format/... fields.
    gpt_image: bool = False
    # DALL-E 3 rewrites every prompt and says so in `revised_prompt`.
    revises_prompt: bool = False
    # gpt-image models: the `background` values, the first the default.
    backgrounds: tuple[str, ...] = ("auto", "transparent", "opaque")
    # Set: any size this rule allows is valid too, not only those in `sizes` (which then only
    # lists common ones, for error messages).
    size_rule: SizeRule | None = None

    @property
    def default_size(self) -> str:
        return self.sizes[0]

    @property
    def default_quality(self) -> str:
        return self.qualities[0]


_GPT_IMAGE_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
_GPT_IMAGE_QUALITIES = ("auto", "low", "medium", "high")
# The common sizes of azure-image-apis.md §9, named in error messages: gpt-image-1's and four
# larger ones.
_GPT_IMAGE_2_SIZES = (*_GPT_IMAGE_SIZES, "2048x2048", "2048x1152", "3840x2160", "2160x3840")
# "2.5 models add xhigh and max" (azure-image-apis.md §9; openai-python 3.51's docstring names
# only gpt-image-2.5-sunburst and -flare and their 2026-09-08 snapshots). Guess (neither source
# says anything about 2.6): the 2.6 models keep gpt-image-2's four qualities.
_GPT_IMAGE_2_5_QUALITIES = (*_GPT_IMAGE_QUALITIES, "xhigh", "max")
# "No transparent background ... on gpt-image-2" (azure-image-apis.md §9).
_OPAQUE_BACKGROUNDS = ("auto", "opaque")
# openai-python 3.51's `background` docstring: the 2.5 models and their snapshots "support
# `opaque` and `transparent` backgrounds" (for gpt-image-2 it calls transparency a preview,
# which the emulator, like §9 and the Azure-focused clients, refuses). Guess (no source on
# the 2.6 models or chatgpt-image-latest): they refuse it like gpt-image-2.
_ALL_BACKGROUNDS = ("auto", "transparent", "opaque")
# name -> (qualities, backgrounds). Guess (openai-python 3.51 names only gpt-image-2 and the
# 2.5 models for free sizes; azure-image-apis.md §9 speaks of "the gpt-image-2 family"): the
# 2.6 models and chatgpt-image-latest take the same free sizes.
_GPT_IMAGE_2_FAMILY = {
    "gpt-image-2": (_GPT_IMAGE_QUALITIES, _OPAQUE_BACKGROUNDS),
    "gpt-image-2-2026-04-21": (_GPT_IMAGE_QUALITIES, _OPAQUE_BACKGROUNDS),
    "gpt-image-2.5-sunburst": (_GPT_IMAGE_2_5_QUALITIES, _ALL_BACKGROUNDS),
    "gpt-image-2.5-sunburst-2026-09-08": (_GPT_IMAGE_2_5_QUALITIES, _ALL_BACKGROUNDS),
    "gpt-image-2.5-flare": (_GPT_IMAGE_2_5_QUALITIES, _ALL_BACKGROUNDS),
    "gpt-image-2.5-flare-2026-09-08": (_GPT_IMAGE_2_5_QUALITIES, _ALL_BACKGROUNDS),
    "gpt-image-2.6-sunburst": (_GPT_IMAGE_QUALITIES, _OPAQUE_BACKGROUNDS),
    "gpt-image-2.6-flare": (_GPT_IMAGE_QUALITIES, _OPAQUE_BACKGROUNDS),
    "chatgpt-image-latest": (_GPT_IMAGE_QUALITIES, _OPAQUE_BACKGROUNDS),
}

MODELS: dict[str, ModelRules] = {
    rules.name: rules
    for rules in (
        ModelRules(
            "dall-e-2",
            max_prompt_chars=1000,
            max_images=10,
            sizes=("1024x1024", "256x256", "512x512"),
            qualities=("standard",),
        ),
        ModelRules(
            "dall-e-3",
            max_prompt_chars=4000,
            max_images=1,
            sizes=("1024x1024", "1792x1024", "1024x1792"),
            qualities=("standard", "hd"),
            styles=("vivid", "natural"),
            revises_prompt=True,
        ),
        *(
            ModelRules(
                name,
                max_prompt_chars=32000,
                max_images=10,
                sizes=_GPT_IMAGE_SIZES,
                qualities=_GPT_IMAGE_QUALITIES,
                gpt_image=True,
            )
            for name in ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
        ),
        *(
            ModelRules(
                name,
                max_prompt_chars=32000,
                max_images=10,
                sizes=_GPT_IMAGE_2_SIZES,
                qualities=qualities,
                gpt_image=True,
                backgrounds=backgrounds,
                size_rule=GPT_IMAGE_2_SIZE_RULE,
            )
            for name, (qualities, backgrounds) in _GPT_IMAGE_2_FAMILY.items()
        ),
    )
}


def size_problem(size: str, rule: SizeRule) -> str | None:
    """Why `size` ("WxH") breaks `rule`, as a sentence starting with the size; None if it fits.

    The rules are checked in a fixed order and only the first broken one is named.
    """
    match = _SIZE.fullmatch(size)
    if match is None:
        return f"{size}: a size is 'auto' or WIDTHxHEIGHT in pixels, e.g. '1536x1024'"
    width, height = int(match.group(1)), int(match.group(2))
    long_side, short_side = max(width, height), min(width, height)
    pixels = width * height
    if width % rule.multiple_of or height % rule.multiple_of:
        return f"{size}: width and height must both be multiples of {rule.multiple_of}"
    if long_side > rule.max_side:
        return f"{size}: the long side may be at most {rule.max_side} pixels"
    if long_side > rule.max_ratio * short_side:
        return f"{size}: the long side may be at most {rule.max_ratio} times the short side"
    if pixels < rule.min_pixels:
        return f"{size}: at least {rule.min_pixels:,} pixels are needed, this is {pixels:,}"
    if pixels > rule.max_pixels:
        return f"{size}: at most {rule.max_pixels:,} pixels are allowed, this is {pixels:,}"
    return None


def revised_prompt(prompt: str, style: str) -> str:
    """DALL-E 3's rewrite of `prompt`: deterministic, and visibly not the prompt as sent.

    Guess (the real rewrite is a model's output; azure-image-apis.md §3.3 only shows one example):
    a fixed lead-in per style in front of the prompt.
    """
    text = prompt.strip()
    text = text[:1].lower() + text[1:]
    if style == "natural":
        return f"A realistic, natural-looking photograph of {text}"
    return f"A detailed, vivid illustration of {text}"


def resolved_size(size: str) -> str:
    return AUTO_SIZE if size == "auto" else size


def resolved_quality(quality: str) -> str:
    return AUTO_QUALITY if quality == "auto" else quality


def usage(prompt: str, quality: str, size: str, n: int, image_tokens: int = 0) -> dict[str, object]:
    """gpt-image token usage for `n` images (§3.3 `imageGenerationsUsage`, §4.3 `usage`);
    `image_tokens` are an edit's input images' (`input_image_tokens`).

    Guess (the reference names the fields, not how they are counted): text tokens are about one
    per four characters of prompt; output tokens come from OUTPUT_TOKENS_PER_IMAGE, or for other
    sizes and qualities from OUTPUT_TOKENS_PER_MEGAPIXEL_SQUARE scaled by pixel area.
    """
    text_tokens = math.ceil(len(prompt) / 4)
    output_tokens = output_tokens_per_image(resolved_quality(quality), resolved_size(size)) * n
    input_tokens = text_tokens + image_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def input_image_tokens(width: int, height: int, input_fidelity: str | None) -> int:
    """Input tokens of one edit input image of `width` x `height` pixels.

    Guess (no source counts them): OpenAI's vision rule for detailed images (fit within
    2048x2048, then the short side to at most 768, then 170 tokens per started 512-pixel tile
    plus 85), doubled for `input_fidelity: high`. A mask counts nothing.
    """
    scale = min(1.0, 2048 / max(width, height))
    scale = min(scale, 768 / (min(width, height) * scale)) * scale if min(width, height) else 1
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    tokens = 85 + 170 * tiles
    return tokens * 2 if input_fidelity == "high" else tokens


def edit_size(model: ModelRules, width: int, height: int) -> str:
    """The output size `size: auto` means for an edit whose first image is `width` x `height`.

    Guess (the reference does not say what `auto` picks for an edit): the first image's size
    where the model can draw it. Models with fixed sizes take the one closest in aspect ratio
    (square within 1.2:1); the gpt-image-2 family takes the image's aspect ratio (cut to 3:1)
    scaled into its pixel bounds and long side, both sides rounded to multiples of 16.
    """
    rule = model.size_rule
    if rule is None:
        ratio = width / height
        if ratio > EDIT_SQUARE_RATIO:
            return "1536x1024"
        if ratio < 1 / EDIT_SQUARE_RATIO:
            return "1024x1536"
        return "1024x1024"
    w, h = float(min(width, rule.max_ratio * height)), float(min(height, rule.max_ratio * width))
    scale = 1.0
    if w * h > rule.max_pixels:
        scale = math.sqrt(rule.max_pixels / (w * h))
    elif w * h < rule.min_pixels:
        scale = math.sqrt(rule.min_pixels / (w * h))
    scale = min(scale, rule.max_side / max(w, h))
    step = rule.multiple_of
    # Floor first (never above a maximum); if that falls under the minimum, round up instead.
    for rounding in (math.floor, math.ceil):
        candidate = (
            f"{max(step, rounding(w * scale / step) * step)}x"
            f"{max(step, rounding(h * scale / step) * step)}"
        )
        if size_problem(candidate, rule) is None:
            return candidate
    return AUTO_SIZE


def output_tokens_per_image(quality: str, size: str) -> int:
    """Output tokens of one image of a resolved `quality` and `size` (see `usage`)."""
    listed = OUTPUT_TOKENS_PER_IMAGE.get((quality, size))
    if listed is not None:
        return listed
    width, _, height = size.partition("x")
    area = int(width) * int(height)
    return max(1, round(OUTPUT_TOKENS_PER_MEGAPIXEL_SQUARE[quality] * area / SQUARE_PIXELS))
