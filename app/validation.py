"""What a new job may ask for, checked before anything is stored or sent upstream.

One parser serves the HTML form and the JSON API, so both refuse the same input with the same
message, naming the field. The limits come from the chosen provider's model (app.image_models).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.image_models import ImageModel, Option
from app.parsing import parse_whole_number
from app.providers.catalog import Target

if TYPE_CHECKING:
    from app.inputs import InputFile

MAX_IDEMPOTENCY_KEY_CHARS = 128
ALLOWED_WHITESPACE = {"\n", "\r", "\t"}
KNOWN_FIELDS = {"prompt", "provider", "size", "n", "options"}
# The form's "Custom…" size choice and the two fields that then give it.
CUSTOM_SIZE = "custom"
CUSTOM_SIZE_FIELDS = ("size_width", "size_height")


class ValidationError(ValueError):
    """Input that Atelier refuses; `field` names the offending input."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    provider: str
    size: str
    n: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    # An edit's images (in order) then at most one mask, checked by app.inputs; none for a
    # generation.
    inputs: tuple[InputFile, ...] = ()

    @property
    def is_edit(self) -> bool:
        return any(item.role == "image" for item in self.inputs)


def find_target(targets: Sequence[Target], raw: Any) -> Target:
    """The target named by `raw`, or the default (first) one when `raw` is empty."""
    if raw is None or raw == "":
        return targets[0]
    for target in targets:
        if target.id == raw:
            return target
    raise ValidationError(
        "provider",
        f"Unknown provider {raw!r}; choose one of {', '.join(t.id for t in targets)}.",
    )


def parse_prompt(raw: Any, model: ImageModel) -> str:
    if raw is None:
        raise ValidationError("prompt", "Enter a prompt.")
    if not isinstance(raw, str):
        raise ValidationError("prompt", "The prompt must be text.")
    prompt = raw.strip()
    if not prompt:
        raise ValidationError("prompt", "Enter a prompt.")
    if len(prompt) > model.max_prompt_chars:
        raise ValidationError(
            "prompt",
            f"The prompt is {len(prompt)} characters long; the limit for {model.name} is "
            f"{model.max_prompt_chars}.",
        )
    for char in prompt:
        if unicodedata.category(char) == "Cc" and char not in ALLOWED_WHITESPACE:
            raise ValidationError(
                "prompt", f"The prompt contains a control character (U+{ord(char):04X})."
            )
    return prompt


def _whole_number(raw: Any, field_name: str, what: str, *, from_form: bool) -> int:
    if from_form and isinstance(raw, str):
        number = parse_whole_number(raw.strip())
        raw = raw if number is None else number
    # bool is an int subclass in Python; JSON true is not a number.
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ValidationError(field_name, f"{what} must be a whole number.")
    return raw


def parse_n(raw: Any, model: ImageModel, *, from_form: bool) -> int:
    if raw is None or raw == "":
        return 1
    n = _whole_number(raw, "n", "The number of images", from_form=from_form)
    if model.max_images == 1 and n != 1:
        raise ValidationError("n", f"{model.name} makes one image per request.")
    if not 1 <= n <= model.max_images:
        raise ValidationError(
            "n", f"The number of images must be between 1 and {model.max_images}."
        )
    return n


def parse_size(raw: Any, model: ImageModel) -> str:
    """One of the model's sizes, or for a model with free sizes any `WxH` its rule allows."""
    if raw is None or raw == "":
        return model.default_size
    if not isinstance(raw, str):
        raise ValidationError("size", "The size must be text such as 1024x1024.")
    if raw in model.sizes:
        return raw
    if model.size_rule is None:
        raise ValidationError(
            "size", f"The size for {model.name} must be one of {', '.join(model.sizes)}."
        )
    problem = model.size_rule.problem(raw)
    if problem is not None:
        raise ValidationError("size", problem)
    return raw


def form_size(data: Mapping[str, Any]) -> Any:
    """The size a form asks for: a listed one, or `custom` with its width and height fields."""
    raw = data.get("size")
    if raw != CUSTOM_SIZE:
        return raw
    width, height = (str(data.get(name) or "").strip() for name in CUSTOM_SIZE_FIELDS)
    if not width or not height:
        raise ValidationError("size", "Enter the custom width and height in pixels.")
    return f"{width}x{height}"


def _parse_option(
    option: Option, raw: Any, field_name: str, model: ImageModel, *, from_form: bool
) -> str | int:
    if option.is_number:
        value = _whole_number(raw, field_name, option.label, from_form=from_form)
        if not option.minimum <= value <= option.maximum:  # type: ignore[operator]
            raise ValidationError(
                field_name,
                f"{option.label} must be between {option.minimum} and {option.maximum}.",
            )
        return value
    if option.name == "background" and raw == "transparent" and not model.transparent_background:
        raise ValidationError(
            field_name,
            f"{model.name} cannot make a transparent background; choose "
            f"{' or '.join(option.choices)}.",
        )
    if raw not in option.choices:
        raise ValidationError(
            field_name, f"{option.label} must be one of {', '.join(option.choices)}."
        )
    return raw


def parse_options(
    raw: Mapping[str, Any], model: ImageModel, *, from_form: bool
) -> dict[str, str | int]:
    """Every option of the model, with defaults filled in; unknown options are refused."""
    prefix = "" if from_form else "options."
    if not from_form:
        for name in raw:
            if model.option(name) is None:
                offered = ", ".join(option.name for option in model.options) or "none"
                raise ValidationError(
                    f"options.{name}",
                    f"{model.name} has no option {name!r} (its options: {offered}).",
                )
    options: dict[str, str | int] = {}
    for option in model.options:
        value = raw.get(option.name)
        if value is None or value == "":
            options[option.name] = option.default
        else:
            field_name = prefix + option.name
            options[option.name] = _parse_option(
                option, value, field_name, model, from_form=from_form
            )
    _check_combination(options, prefix)
    return options


def _check_combination(options: Mapping[str, Any], prefix: str) -> None:
    output_format = options.get("output_format")
    if options.get("background") == "transparent" and output_format == "jpeg":
        raise ValidationError(
            prefix + "background", "A transparent background needs PNG or WebP output, not JPEG."
        )
    if output_format == "png" and options.get("output_compression", 100) != 100:
        raise ValidationError(
            prefix + "output_compression", "Compression applies only to JPEG and WebP output."
        )


def parse_job_request(
    data: Mapping[str, Any], targets: Sequence[Target], *, from_form: bool = False
) -> JobRequest:
    """Validate a form or JSON body; raise ValidationError on the first problem found.

    Form fields carry options at the top level (`quality=hd`); JSON carries them in `options`.
    """
    if from_form:
        raw_options: Any = data
    else:
        unknown = sorted(set(data) - KNOWN_FIELDS)
        if unknown:
            raise ValidationError(unknown[0], f"Unknown field '{unknown[0]}'.")
        raw_options = data.get("options") or {}
        if not isinstance(raw_options, dict):
            raise ValidationError("options", "Options must be a JSON object.")
    target = find_target(targets, data.get("provider"))
    model = target.model
    return JobRequest(
        prompt=parse_prompt(data.get("prompt"), model),
        provider=target.id,
        size=parse_size(form_size(data) if from_form else data.get("size"), model),
        n=parse_n(data.get("n"), model, from_form=from_form),
        options=parse_options(raw_options, model, from_form=from_form),
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
