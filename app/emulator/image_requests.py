"""Reading and validating a synchronous image-generation request body.

Owns `ImageRequest` (a validated body with every default filled in), `InvalidRequest` (what is
wrong, and which field) and the two platforms' differences (`AZURE`, `OPENAI`). The per-model
limits come from models.py; each route wraps `InvalidRequest` in its own error envelope.

JSON `null` counts as "not given" for every optional field, as in OpenAI's APIs. Checks run in
a fixed order and the first failing field is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from .config import MAX_BODY_BYTES
from .models import ModelRules, size_problem

if TYPE_CHECKING:  # for annotations only: edit_requests imports this module
    from .edit_requests import InputFile

RESPONSE_FORMATS = ("url", "b64_json")
MODERATIONS = ("auto", "low")
# Guess (not in azure-image-apis.md, which only says `safety_identifier` is "a stable, hashed
# per-end-user id", §9): OpenAI's limit of 64 characters for it.
MAX_SAFETY_IDENTIFIER_CHARS = 64
MAX_PARTIAL_IMAGES = 3
# A bad value is quoted back in the error message, cut to this many characters.
MAX_QUOTED_VALUE_CHARS = 60
# A free size ("WIDTHxHEIGHT") longer than this is not parsed, only quoted back (cut).
MAX_SIZE_CHARS = 16
# Fields only the gpt-image models have (azure-image-apis.md §3.2, §4.2).
GPT_IMAGE_ONLY_FIELDS = (
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "partial_images",
    "stream",
)
KNOWN_FIELDS = frozenset(
    {
        "prompt",
        "model",
        "n",
        "size",
        "quality",
        "style",
        "response_format",
        "user",
        "safety_identifier",
    }
    | set(GPT_IMAGE_ONLY_FIELDS)
)


class InvalidRequest(Exception):
    """A body the service would refuse. `param` names the field (None: the body as a whole)."""

    def __init__(
        self, message: str, param: str | None, code: str = "invalid_value", status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Platform:
    """Where Azure's deployment route and OpenAI's route differ in what they accept."""

    name: str
    # output_format values, the first the default.
    output_formats: tuple[str, ...]
    # Formats that can carry an alpha channel, for `background: transparent`.
    transparent_formats: tuple[str, ...]
    # OpenAI answers fields it does not know with 400 "Unknown parameter".
    rejects_unknown_fields: bool


# Azure: "WEBP images aren't supported" (azure-image-apis.md §3.2). Guess (UNCONFIRMED in
# azure-image-apis.md, which says it of the gpt-image-1 series): the same holds for the
# gpt-image-2 family on Azure, on the deployment route and the v1 route alike.
AZURE = Platform(
    "Azure",
    output_formats=("png", "jpeg"),
    transparent_formats=("png",),
    # Guess (UNCONFIRMED in azure-image-apis.md §3.2, which lists fields Azure documented only
    # briefly): unknown fields are ignored, so the emulator never refuses what Azure might take.
    rejects_unknown_fields=False,
)
OPENAI = Platform(
    "OpenAI",
    output_formats=("png", "jpeg", "webp"),
    transparent_formats=("png", "webp"),
    # Guess (not in azure-image-apis.md): OpenAI's 400 "Unknown parameter: 'x'." with code
    # `unknown_parameter`, as its API answers fields it does not know.
    rejects_unknown_fields=True,
)


@dataclass(frozen=True)
class ImageRequest:
    """A valid request; fields a model does not have keep their defaults and are unused."""

    model: ModelRules
    prompt: str
    n: int
    size: str
    quality: str
    style: str | None
    response_format: str
    background: str
    output_format: str
    output_compression: int
    moderation: str
    # Who the end user is, as sent (None: not sent). The service attributes the request to a
    # non-empty `safety_identifier` before `user` (azure-image-apis.md §9); nothing here does.
    user: str | None = None
    safety_identifier: str | None = None
    # Server-sent events instead of one JSON body (gpt-image only, n = 1; see streaming.py),
    # with this many partial frames before the final image.
    stream: bool = False
    partial_images: int = 0
    # An edit's files (edit_requests.py): the images in the order sent, then the mask if any.
    # Empty for a generation.
    inputs: tuple[InputFile, ...] = ()
    # An edit's `input_fidelity` as sent (None: not sent, or not an edit).
    input_fidelity: str | None = None

    @property
    def is_edit(self) -> bool:
        return bool(self.inputs)


def read_json_object() -> dict[str, object]:
    """The current request's body as a JSON object; InvalidRequest (param None) otherwise."""
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge as exc:
        raise InvalidRequest(
            f"The request body is larger than {MAX_BODY_BYTES} bytes.", None, status=413
        ) from exc
    if not request.is_json:
        raise InvalidRequest(
            "The request body must be JSON (Content-Type: application/json).", None
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.", None) from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    return payload


def parse_image_request(
    payload: dict[str, object], model: ModelRules, platform: Platform
) -> ImageRequest:
    """Validate `payload` for `model` on `platform`; raises InvalidRequest naming the field."""
    if platform.rejects_unknown_fields:
        for name in payload:
            if name not in KNOWN_FIELDS:
                raise _unknown_parameter(name)

    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' is required and must be a string.", "prompt")
    if not prompt.strip():
        # Guess (the reference only gives maximum lengths): a blank prompt is refused too.
        raise InvalidRequest("'prompt' must not be empty.", "prompt")
    if len(prompt) > model.max_prompt_chars:
        raise InvalidRequest(
            f"'prompt' is {len(prompt)} characters long; the maximum for {model.name} is "
            f"{model.max_prompt_chars}.",
            "prompt",
        )

    n = _optional(payload, "n", 1)
    # bool is a subclass of int in Python; `true` must not pass as 1.
    if type(n) is not int or not 1 <= n <= model.max_images:
        if model.max_images == 1:
            raise InvalidRequest(f"'n' must be 1 for {model.name}.", "n")
        raise InvalidRequest(
            f"'n' must be an integer between 1 and {model.max_images} for {model.name}.", "n"
        )

    size = _size(payload, model)
    quality = _choice(payload, "quality", model.qualities, model)

    style = None
    if model.styles:
        style = _choice(payload, "style", model.styles, model)
    elif payload.get("style") is not None:
        raise _not_supported("style", model, platform)

    response_format = "b64_json"
    if not model.gpt_image:
        response_format = _choice(payload, "response_format", RESPONSE_FORMATS, model)
    elif payload.get("response_format") is not None:
        # gpt-image always answers base64 (azure-image-apis.md §3.2, §4.2).
        raise _not_supported("response_format", model, platform)

    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", "user")
    safety_identifier = _safety_identifier(payload)

    stream, partial_images = False, 0
    if model.gpt_image:
        background, output_format, compression, moderation = _gpt_image_fields(
            payload, model, platform
        )
        stream, partial_images = _stream_fields(payload, n)
    else:
        # Guess (azure-image-apis.md §3.2, §4.2 say which models have these fields, not how the
        # others answer them): 400 naming the field, even for a no-op such as `stream: false`.
        for name in GPT_IMAGE_ONLY_FIELDS:
            if payload.get(name) is not None:
                raise _not_supported(name, model, platform)
        # What DALL-E draws: an opaque PNG at full quality.
        background, output_format, compression, moderation = "opaque", "png", 100, "auto"

    return ImageRequest(
        model=model,
        prompt=prompt,
        n=n,
        size=size,
        quality=quality,
        style=style,
        response_format=response_format,
        background=background,
        output_format=output_format,
        output_compression=compression,
        moderation=moderation,
        user=user,
        safety_identifier=safety_identifier,
        stream=stream,
        partial_images=partial_images,
    )


def _gpt_image_fields(
    payload: dict[str, object], model: ModelRules, platform: Platform
) -> tuple[str, str, int, str]:
    """A gpt-image request's (background, output_format, output_compression, moderation)."""
    background = _background(payload, model)
    output_format = _output_format(payload, platform)
    compression = _optional(payload, "output_compression", 100)
    if type(compression) is not int or not 0 <= compression <= 100:
        raise InvalidRequest(
            "'output_compression' must be an integer between 0 and 100.", "output_compression"
        )
    if background == "transparent" and output_format not in platform.transparent_formats:
        allowed = " or ".join(f"'{name}'" for name in platform.transparent_formats)
        raise InvalidRequest(
            f"'background': 'transparent' needs output_format {allowed}, not '{output_format}'.",
            "background",
        )
    # Guess (UNCONFIRMED in azure-image-apis.md §3.2 whether Azure takes `moderation`): accepted
    # on both platforms, so the emulator never refuses what the real service might take.
    moderation = _choice(payload, "moderation", MODERATIONS, model)
    return background, output_format, compression, moderation


def _stream_fields(payload: dict[str, object], n: int) -> tuple[bool, int]:
    """A gpt-image request's (stream, partial_images). `partial_images` without `stream` is
    checked, then unused: the answer is one JSON body."""
    partial_images = _optional(payload, "partial_images", 0)
    if type(partial_images) is not int or not 0 <= partial_images <= MAX_PARTIAL_IMAGES:
        raise InvalidRequest(
            f"'partial_images' must be an integer between 0 and {MAX_PARTIAL_IMAGES}.",
            "partial_images",
        )
    stream = _optional(payload, "stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", "stream")
    if stream and n != 1:
        # Guess (azure-image-apis.md §3.5, §9 show streams of one image and say nothing of n):
        # a stream carries one image, so n > 1 is refused rather than interleaving the
        # partial frames of several images in one stream.
        raise InvalidRequest("'stream': true takes n = 1; send n = 1 or stream = false.", "n")
    return stream, partial_images


def _optional(payload: dict[str, object], name: str, default: object) -> object:
    value = payload.get(name)
    return default if value is None else value


def _choice(
    payload: dict[str, object], name: str, allowed: tuple[str, ...], model: ModelRules
) -> str:
    """`payload[name]`, one of `allowed`; the first of `allowed` when not given."""
    value = _optional(payload, name, allowed[0])
    if value not in allowed:
        choices = ", ".join(f"'{choice}'" for choice in allowed)
        raise InvalidRequest(
            f"Invalid value for '{name}': {_quoted(value)}. {model.name} supports {choices}.",
            name,
        )
    return value  # type: ignore[return-value]


def _size(payload: dict[str, object], model: ModelRules) -> str:
    """The requested size: one of the model's sizes, or any its size rule allows."""
    value = _optional(payload, "size", model.default_size)
    if model.size_rule is None or value in model.sizes:
        return _choice(payload, "size", model.sizes, model)
    # A WIDTHxHEIGHT has at most 13 characters ("999999x999999"); longer is only quoted back.
    if not isinstance(value, str) or len(value) > MAX_SIZE_CHARS:
        raise InvalidRequest(
            f"Invalid value for 'size': {_quoted(value)}. {model.name} takes 'auto' or a "
            "'WIDTHxHEIGHT' string.",
            "size",
        )
    problem = size_problem(value, model.size_rule)
    if problem is not None:
        raise InvalidRequest(f"Invalid value for 'size' for {model.name}: {problem}.", "size")
    return value


def _background(payload: dict[str, object], model: ModelRules) -> str:
    value = _optional(payload, "background", model.backgrounds[0])
    if value == "transparent" and value not in model.backgrounds:
        choices = " or ".join(f"'{choice}'" for choice in model.backgrounds)
        raise InvalidRequest(
            f"{model.name} does not support a transparent background; use {choices}.",
            "background",
        )
    return _choice(payload, "background", model.backgrounds, model)


def _safety_identifier(payload: dict[str, object]) -> str | None:
    """`safety_identifier` as sent (None when not), for every model.

    Guess (azure-image-apis.md §9 names the field, not which models or routes take it, and
    nothing says whether Azure does): accepted with every model on every route, like `user`,
    so the emulator never refuses what the service might take.
    """
    value = payload.get("safety_identifier")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("'safety_identifier' must be a string.", "safety_identifier")
    if len(value) > MAX_SAFETY_IDENTIFIER_CHARS:
        raise InvalidRequest(
            f"'safety_identifier' is {len(value)} characters long; the maximum is "
            f"{MAX_SAFETY_IDENTIFIER_CHARS}. Send a hash of the user's id instead.",
            "safety_identifier",
        )
    return value


def _output_format(payload: dict[str, object], platform: Platform) -> str:
    value = _optional(payload, "output_format", platform.output_formats[0])
    if platform is AZURE and isinstance(value, str):
        # Guess (azure-image-apis.md §3.2: some 2025 docs wrote PNG/JPEG in capitals): Azure
        # takes either case.
        value = value.lower()
        if value == "webp":
            raise InvalidRequest(
                "'output_format': WEBP images aren't supported; use 'png' or 'jpeg'.",
                "output_format",
            )
    if value not in platform.output_formats:
        choices = ", ".join(f"'{choice}'" for choice in platform.output_formats)
        raise InvalidRequest(
            f"Invalid value for 'output_format': {_quoted(value)}. Supported: {choices}.",
            "output_format",
        )
    return value  # type: ignore[return-value]


def _quoted(value: object) -> str:
    text = json.dumps(value)
    if len(text) > MAX_QUOTED_VALUE_CHARS:
        return text[: MAX_QUOTED_VALUE_CHARS - 1] + "…"
    return text


def _unknown_parameter(name: str) -> InvalidRequest:
    return InvalidRequest(f"Unknown parameter: '{name}'.", name, code="unknown_parameter")


def _not_supported(name: str, model: ModelRules, platform: Platform) -> InvalidRequest:
    """A known field this model does not have."""
    if platform.rejects_unknown_fields and model.gpt_image:
        # OpenAI answers response_format (and style) for gpt-image as an unknown parameter
        # (azure-image-apis.md §4.2: "Not supported for gpt-image-1").
        return _unknown_parameter(name)
    return InvalidRequest(f"'{name}' is not supported by {model.name}.", name)
