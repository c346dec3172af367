"""The image models the emulator knows, and what each one accepts and reports.

Owns `ModelRules` and the `MODELS` table (limits from azure-image-apis.md §3.2, §4.2 and the
checklist in §7 item 13), plus the per-model numbers a response carries: DALL-E 3's
`revised_prompt` and the gpt-image models' token `usage`. Which fields a request may set, and
in which shape, is decided from these rules by image_requests.py.
"""

from __future__ import annotations

import math
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

    @property
    def default_size(self) -> str:
        return self.sizes[0]

    @property
    def default_quality(self) -> str:
        return self.qualities[0]


_GPT_IMAGE_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
_GPT_IMAGE_QUALITIES = ("auto", "low", "medium", "high")

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
    )
}


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


def usage(prompt: str, quality: str, size: str, n: int) -> dict[str, object]:
    """gpt-image token usage for `n` images (§3.3 `imageGenerationsUsage`, §4.3 `usage`).

    Guess (the reference names the fields, not how they are counted): text tokens are about one
    per four characters of prompt; output tokens come from OUTPUT_TOKENS_PER_IMAGE.
    """
    text_tokens = math.ceil(len(prompt) / 4)
    per_image = OUTPUT_TOKENS_PER_IMAGE[(resolved_quality(quality), resolved_size(size))]
    output_tokens = per_image * n
    return {
        "input_tokens": text_tokens,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
        "output_tokens": output_tokens,
        "total_tokens": text_tokens + output_tokens,
    }
