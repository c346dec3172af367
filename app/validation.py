"""What a new job may ask for, checked before anything is stored or sent upstream.

One parser serves the HTML form and the JSON API, so both refuse the same input with the
same message, naming the field.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The asynchronous DALL-E 2 API's limits (azure-image-apis.md §2.2). The docs conflict on n
# (1-5 vs 1-10); the TypeSpec and the how-to say 1-10, which is what we allow.
MAX_PROMPT_CHARS = 1000
MIN_IMAGES, MAX_IMAGES = 1, 10
SIZES = ("256x256", "512x512", "1024x1024")
DEFAULT_SIZE = "1024x1024"
MAX_IDEMPOTENCY_KEY_CHARS = 128
ALLOWED_WHITESPACE = {"\n", "\r", "\t"}
KNOWN_FIELDS = {"prompt", "size", "n", "options"}


class ValidationError(ValueError):
    """Input that Atelier refuses; `field` names the offending input."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    size: str = DEFAULT_SIZE
    n: int = 1
    options: dict[str, Any] = field(default_factory=dict)


def parse_prompt(raw: Any) -> str:
    if raw is None:
        raise ValidationError("prompt", "Enter a prompt.")
    if not isinstance(raw, str):
        raise ValidationError("prompt", "The prompt must be text.")
    prompt = raw.strip()
    if not prompt:
        raise ValidationError("prompt", "Enter a prompt.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            "prompt",
            f"The prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.",
        )
    for char in prompt:
        if unicodedata.category(char) == "Cc" and char not in ALLOWED_WHITESPACE:
            raise ValidationError(
                "prompt", f"The prompt contains a control character (U+{ord(char):04X})."
            )
    return prompt


def parse_n(raw: Any, *, from_form: bool) -> int:
    if raw is None or raw == "":
        return 1
    if from_form and isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    # bool is an int subclass in Python; JSON true is not a number of images.
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ValidationError("n", "The number of images must be a whole number.")
    if not MIN_IMAGES <= raw <= MAX_IMAGES:
        raise ValidationError(
            "n", f"The number of images must be between {MIN_IMAGES} and {MAX_IMAGES}."
        )
    return raw


def parse_size(raw: Any) -> str:
    if raw is None or raw == "":
        return DEFAULT_SIZE
    if raw not in SIZES:
        raise ValidationError("size", f"The size must be one of {', '.join(SIZES)}.")
    return raw


def parse_job_request(data: Mapping[str, Any], *, from_form: bool = False) -> JobRequest:
    """Validate a form or JSON body; raise ValidationError on the first problem found."""
    if not from_form:
        unknown = sorted(set(data) - KNOWN_FIELDS)
        if unknown:
            raise ValidationError(unknown[0], f"Unknown field '{unknown[0]}'.")
        options = data.get("options")
        if options not in (None, {}):
            # Model options (quality, style, ...) belong to the deployment API (issue 3);
            # the asynchronous DALL-E 2 API takes none.
            raise ValidationError("options", "This model takes no options.")
    return JobRequest(
        prompt=parse_prompt(data.get("prompt")),
        size=parse_size(data.get("size")),
        n=parse_n(data.get("n"), from_form=from_form),
    )


def parse_idempotency_key(raw: str | None) -> str | None:
    if raw is None or raw.strip() == "":
        return None
    key = raw.strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise ValidationError(
            "idempotency_key",
            f"The idempotency key must be printable and at most {MAX_IDEMPOTENCY_KEY_CHARS} "
            "characters.",
        )
    return key
