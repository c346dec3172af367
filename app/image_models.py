"""The model catalogue: which image models exist, which family each belongs to, and what a
family accepts (sizes, number of images, prompt length, options) on each API.

A model belongs to one family with one capability profile: `dall-e-2`, `dall-e-3`,
`gpt-image-1` (gpt-image-1, -1-mini, -1.5) and `gpt-image-2` (gpt-image-2, its dated snapshots,
the 2.5 and 2.6 models, chatgpt-image-latest). A name the catalogue does not list is still
accepted when its family can be told from the name (`gpt-image-2.7-x`) or is given explicitly
(`name:family`), so a model that ships next month works without a new release.

Sources: ../shared/reference/azure-image-apis.md §2.2 (DALL-E 2), §3.2 (Azure deployments),
§4.2 (OpenAI), §5 and §9 (retirements, gpt-image-2). The same model can differ by API: Azure
has no WebP output. Validation (app.validation), the form's fields (`_model_options.html`),
`GET /api/providers` and pricing (app.pricing, by model name) are all driven by these tables.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

AZURE = "azure"
OPENAI = "openai"


@dataclass(frozen=True)
class Option:
    """One model option: a choice among values, or a whole number in a range.

    `send_default`: False for fields that are left out of the request while they hold their
    default, because not every server is known to accept them.
    """

    name: str
    label: str
    default: str | int
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    help: str = ""
    send_default: bool = True

    @property
    def is_number(self) -> bool:
        return not self.choices


@dataclass(frozen=True)
class SizeRule:
    """Free sizes `WxH` (gpt-image-2): each side a multiple of `multiple`, the long side at most
    `max_side` and at most `max_ratio` times the short side, `min_pixels..max_pixels` in all."""

    multiple: int
    max_side: int
    max_ratio: int
    min_pixels: int
    max_pixels: int

    def problem(self, size: str) -> str | None:
        """Why `size` breaks the rule (a sentence naming the rule), or None when it is fine."""
        parsed = parse_dimensions(size)
        if parsed is None:
            return f"{size}: write the size as WIDTHxHEIGHT, e.g. 1280x720, or auto."
        width, height = parsed
        long_side, short_side = max(width, height), min(width, height)
        if width % self.multiple or height % self.multiple:
            return (
                f"{size}: both sides must be multiples of {self.multiple} "
                f"(nearest: {_nearest(width, self.multiple)}x{_nearest(height, self.multiple)})."
            )
        if long_side > self.max_side:
            return f"{size}: the long side may be at most {self.max_side} pixels."
        if long_side > self.max_ratio * short_side:
            return f"{size}: the long side may be at most {self.max_ratio} times the short side."
        pixels = width * height
        if pixels < self.min_pixels:
            return f"{size}: at least {self.min_pixels:,} pixels are needed (this is {pixels:,})."
        if pixels > self.max_pixels:
            return f"{size}: at most {self.max_pixels:,} pixels are allowed (this is {pixels:,})."
        return None


DIMENSIONS = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")


def parse_dimensions(size: str) -> tuple[int, int] | None:
    """(width, height) of an ASCII `WxH` size, or None."""
    match = DIMENSIONS.fullmatch(size) if size.isascii() else None
    return (int(match[1]), int(match[2])) if match else None


def _nearest(value: int, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


@dataclass(frozen=True)
class Retirement:
    """A model the API no longer serves (or soon will not): when, and what to use instead."""

    date: str
    replacement: str
    note: str = ""

    def sentence(self, model: str, service: str) -> str:
        return (
            f"{model} was retired on {service} on {self.date}{self.note}; "
            f"use {self.replacement} instead."
        )


@dataclass(frozen=True)
class ImageModel:
    name: str
    family: str
    sizes: tuple[str, ...]
    default_size: str
    max_images: int
    max_prompt_chars: int
    options: tuple[Option, ...] = field(default=())
    # Free sizes beyond `sizes` (which are then the common ones the form offers).
    size_rule: SizeRule | None = None
    transparent_background: bool = False
    # Takes `images/edits` (input images and a mask) and streams partial images (§3.2, §3.5, §9).
    edits: bool = False
    streams: bool = False
    retired: Retirement | None = None
    # False: not in the catalogue, its family told from the name or given explicitly.
    listed: bool = True

    def option(self, name: str) -> Option | None:
        return next((option for option in self.options if option.name == name), None)

    @property
    def option_defaults(self) -> dict[str, str | int]:
        return {option.name: option.default for option in self.options}

    @property
    def input_fidelity(self) -> bool:
        """Whether edits may ask for high input fidelity (the gpt-image-1 family only)."""
        return self.option("input_fidelity") is not None

    @property
    def gpt_image(self) -> bool:
        return self.family in (GPT_IMAGE_1, GPT_IMAGE_2)


DALL_E_2_FAMILY = "dall-e-2"
DALL_E_3_FAMILY = "dall-e-3"
GPT_IMAGE_1 = "gpt-image-1"
GPT_IMAGE_2 = "gpt-image-2"
FAMILIES = (DALL_E_2_FAMILY, DALL_E_3_FAMILY, GPT_IMAGE_1, GPT_IMAGE_2)

# The catalogue, cross-checked against the openai SDK's `openai/types/image_model.py` (3.57).
LISTED_MODELS: dict[str, str] = {
    "dall-e-2": DALL_E_2_FAMILY,
    "dall-e-3": DALL_E_3_FAMILY,
    "gpt-image-1": GPT_IMAGE_1,
    "gpt-image-1-mini": GPT_IMAGE_1,
    "gpt-image-1.5": GPT_IMAGE_1,
    "gpt-image-2": GPT_IMAGE_2,
    "gpt-image-2-2026-04-21": GPT_IMAGE_2,
    "gpt-image-2.5-sunburst": GPT_IMAGE_2,
    "gpt-image-2.5-sunburst-2026-09-08": GPT_IMAGE_2,
    "gpt-image-2.5-flare": GPT_IMAGE_2,
    "gpt-image-2.5-flare-2026-09-08": GPT_IMAGE_2,
    "gpt-image-2.6-sunburst": GPT_IMAGE_2,
    "gpt-image-2.6-flare": GPT_IMAGE_2,
    "chatgpt-image-latest": GPT_IMAGE_2,
}

# The model a new deployment or account should use: the flagship of the newest family.
CURRENT_MODEL = "gpt-image-2"

# §5, §9. OpenAI's dates are the SDK docstrings'. Azure: dall-e-3's date conflicts between two
# docs pages (2026-02-18 and 2026-03-04); the earlier one is shown.
RETIREMENTS: dict[tuple[str, str], Retirement] = {
    (OPENAI, "gpt-image-1"): Retirement(
        "2026-10-23", "gpt-image-2 (or gpt-image-2.5-sunburst / -flare)"
    ),
    (OPENAI, "dall-e-2"): Retirement("2026-05-12", CURRENT_MODEL),
    (OPENAI, "dall-e-3"): Retirement("2026-05-12", CURRENT_MODEL),
    (AZURE, "dall-e-2"): Retirement("2025-01-27", CURRENT_MODEL),
    (AZURE, "dall-e-3"): Retirement("2026-02-18", CURRENT_MODEL, " (some docs say 2026-03-04)"),
}

# What a name tells about its family when the catalogue does not list it.
_GPT_IMAGE_NAME = re.compile(r"(?:chat)?gpt-image-(\d+)(?![0-9])")
_CHATGPT_IMAGE = re.compile(r"chatgpt-image(?:-|$)")
# §9: "2.5 models add xhigh and max". Guess: only the 2.5 models; the 2.6 ones are not said to.
_EXTRA_QUALITY_NAME = re.compile(r"gpt-image-2\.5(?![0-9])")

# §3.5, §9: `partial_images` 0-3; previews need a stream, which answers with one image.
PARTIAL_IMAGES_MAX = 3
PARTIAL_IMAGES_HELP = (
    "Partial images shown while the image is made (0-3); only when one image is asked for"
)

GPT_IMAGE_2_SIZES = (
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "2048x2048",
    "2048x1152",
    "3840x2160",
    "2160x3840",
    "auto",
)
GPT_IMAGE_2_SIZE_RULE = SizeRule(
    multiple=16, max_side=3840, max_ratio=3, min_pixels=655_360, max_pixels=8_294_400
)


class UnknownModel(ValueError):
    """A model name whose family cannot be told; the message says what to write."""


def family_of(name: str) -> str | None:
    """The family a model name belongs to: listed, or told from the name; None if neither."""
    if name in LISTED_MODELS:
        return LISTED_MODELS[name]
    if _CHATGPT_IMAGE.match(name):
        return GPT_IMAGE_2
    match = _GPT_IMAGE_NAME.match(name)
    if match:
        return {"1": GPT_IMAGE_1, "2": GPT_IMAGE_2}.get(match[1])
    for family in (DALL_E_2_FAMILY, DALL_E_3_FAMILY):
        if name == family or name.startswith(family + "-"):
            return family
    return None


def resolve_model(name: str, api: str, family: str | None = None) -> ImageModel:
    """The model `name` on `api` (AZURE or OPENAI), of `family` when given explicitly.

    Raises UnknownModel when no family is given and none can be told from the name."""
    if family is not None and family not in FAMILIES:
        raise UnknownModel(f"unknown model family {family!r}; the families are {_families()}.")
    found = family_of(name)
    if family is None and found is None:
        raise UnknownModel(
            f"the family of the model {name!r} cannot be told from its name; write it as "
            f"{name}:FAMILY, where FAMILY is one of {_families()}."
        )
    return _model(name, api, family or found)


def _families() -> str:
    return ", ".join(FAMILIES)


@functools.cache
def _model(name: str, api: str, family: str) -> ImageModel:
    # What every family shares: each defaults to a square 1024x1024 image.
    model = functools.partial(
        ImageModel,
        name=name,
        family=family,
        default_size="1024x1024",
        retired=RETIREMENTS.get((api, name)),
        listed=LISTED_MODELS.get(name) == family,
    )
    if family == DALL_E_2_FAMILY:
        # The docs conflict (1-5 vs 1-10); the TypeSpec and the how-to say 1-10.
        return model(
            sizes=("256x256", "512x512", "1024x1024"), max_images=10, max_prompt_chars=1000
        )
    if family == DALL_E_3_FAMILY:
        return model(
            sizes=("1024x1024", "1792x1024", "1024x1792"),
            max_images=1,
            max_prompt_chars=4000,
            options=(
                Option("quality", "Quality", "standard", ("standard", "hd")),
                Option("style", "Style", "vivid", ("vivid", "natural")),
            ),
        )
    # Azure: "WEBP images aren't supported" (§3.2); OpenAI accepts webp (§4.2, §9). Guess: the
    # same holds for gpt-image-2 on Azure.
    formats = ("png", "jpeg") if api == AZURE else ("png", "jpeg", "webp")
    qualities = ("auto", "low", "medium", "high")
    if family == GPT_IMAGE_2 and _EXTRA_QUALITY_NAME.match(name):
        qualities += ("xhigh", "max")
    transparent = family == GPT_IMAGE_1
    # §9: gpt-image-2 has no input_fidelity; sent only with edits, and only when `high`.
    fidelity = (
        (
            Option(
                "input_fidelity",
                "Input fidelity",
                "low",
                ("low", "high"),
                send_default=False,
                help="edits only",
            ),
        )
        if family == GPT_IMAGE_1
        else ()
    )
    backgrounds = ("auto", "transparent", "opaque") if transparent else ("auto", "opaque")
    return model(
        sizes=GPT_IMAGE_2_SIZES
        if family == GPT_IMAGE_2
        else ("1024x1024", "1536x1024", "1024x1536", "auto"),
        max_images=10,
        max_prompt_chars=32000,
        options=(
            Option("quality", "Quality", "auto", qualities),
            Option("background", "Background", "auto", backgrounds),
            Option("output_format", "Format", "png", formats),
            Option(
                "output_compression",
                "Compression",
                100,
                minimum=0,
                maximum=100,
                help="JPEG/WebP quality, 0-100",
            ),
            # Guess (§3.2: UNCONFIRMED which names Azure accepts): sent only when not `auto`.
            Option("moderation", "Moderation", "auto", ("auto", "low"), send_default=False),
            # Sent (with `stream`) only when it is above 0 and one image is asked for.
            Option(
                "partial_images",
                "Live previews",
                0,
                minimum=0,
                maximum=PARTIAL_IMAGES_MAX,
                send_default=False,
                help=PARTIAL_IMAGES_HELP,
            ),
            *fidelity,
        ),
        size_rule=GPT_IMAGE_2_SIZE_RULE if family == GPT_IMAGE_2 else None,
        transparent_background=transparent,
        edits=True,
        streams=True,
    )


def listed_models(api: str) -> list[ImageModel]:
    """Every model of the catalogue as `api` knows it (for documentation and tests)."""
    return [_model(name, api, family) for name, family in LISTED_MODELS.items()]
