"""Reading and validating an image-edit request: multipart/form-data (azure-image-apis.md §3.2, §9).

Owns `EditForm` (the form's text fields and files as received: read once, hashed, logged),
`InputFile` (one validated image or mask, decoded), `read_edit_form()` and
`parse_edit_request(form, model, platform)`. The text fields are turned into the typed payload
`image_requests.parse_image_request` checks, so generations and edits share one set of field
rules (and error messages); this module adds the edit's own rules:

- only gpt-image models edit (DALL-E answers 400 naming `model`);
- 1 to 16 images, in parts named `image` or `image[]` (openai-python sends `image[]` for a
  list), each PNG, JPEG or WebP by its declared Content-Type *and* its bytes, at most 50 MiB,
  decodable, at most `MAX_INPUT_PIXELS` pixels (400 naming `image`);
- at most one `mask`: a PNG with an alpha channel, the first image's width and height, at most
  4 MiB (400 naming `mask`);
- `input_fidelity` only on the gpt-image-1 family (400 naming `input_fidelity` elsewhere);
- `size: auto` means the first image's size, fitted to the model's sizes (models.edit_size).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field, replace

from flask import request
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from .image_requests import (
    KNOWN_FIELDS,
    MAX_QUOTED_VALUE_CHARS,
    ImageRequest,
    InvalidRequest,
    Platform,
    parse_image_request,
)
from .models import INPUT_FIDELITIES, ModelRules, edit_size
from .request_log import log_request_fields, log_request_files

# "each image should be a png, webp, or jpg file less than 50MB. You can provide up to 16
# images" (openai-python 3.51's `images.edit` docstring; azure-image-apis.md §9). Guess (MB or
# MiB is not said): MiB, the looser reading, so the emulator never refuses a file the service
# might take.
MAX_INPUT_IMAGES = 16
MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024
# "Must be a valid PNG file, less than 4MB, and have the same dimensions as `image`" (the same
# docstring; §9). Guess: MiB, as above.
MAX_MASK_BYTES = 4 * 1024 * 1024
# Guess (no source gives a pixel limit for inputs): Pillow's own decompression-bomb threshold,
# what any Pillow-based client refuses to open anyway.
MAX_INPUT_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# Every file at its limit, plus room for the text fields: larger bodies are 413 before a byte
# of them is parsed. Werkzeug spools file parts to temporary files, so this is not memory.
MAX_EDIT_BODY_BYTES = MAX_INPUT_IMAGES * MAX_INPUT_IMAGE_BYTES + MAX_MASK_BYTES + 1024 * 1024
IMAGE_FIELDS = ("image", "image[]")
MASK_FIELD = "mask"
# Content types the services name, and the format each means. Guess (OpenAI answers "Invalid
# file 'image': unsupported mimetype ('application/octet-stream'). Supported file formats are
# 'image/jpeg', 'image/png', and 'image/webp'." for a part without an image type; the same rule
# is assumed on Azure).
CONTENT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
# Text fields an edit sends as numbers or booleans; the rest stay strings.
INTEGER_FIELDS = ("n", "output_compression", "partial_images")
# What counts as a number there: ASCII digits only (str.isdigit also takes "²"), and few enough
# that int() never meets Python's limit on digits.
INTEGER_TEXT = re.compile(r"\s*-?[0-9]{1,9}\s*")
BOOLEAN_FIELDS = ("stream",)
KNOWN_EDIT_FIELDS = KNOWN_FIELDS | {"input_fidelity"}
READ_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReceivedFile:
    """One file part as it arrived, before validation. `data` is None when it was larger than
    any input may be (it was hashed, not kept)."""

    field: str
    filename: str | None
    content_type: str | None
    size: int
    sha256: str
    data: bytes | None

    @property
    def role(self) -> str:
        """`image`, `mask`, or the part's own name for a part no edit has."""
        return "image" if self.field in IMAGE_FIELDS else self.field

    def log_entry(self) -> dict[str, object]:
        return {
            "role": self.role,
            "field": self.field,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class EditForm:
    """An edit request's form: text fields (first value of each) and files, in the order sent."""

    fields: dict[str, str]
    files: tuple[ReceivedFile, ...]


@dataclass(frozen=True, eq=False)
class InputFile:
    """A validated image or mask, decoded (`picture` is loaded, in its own mode)."""

    role: str
    format: str
    width: int
    height: int
    sha256: str
    picture: Image.Image
    # The file exactly as sent and its name, for the result's Content Credentials ingredients.
    data: bytes = field(default=b"", repr=False)
    filename: str | None = None


def read_edit_form() -> EditForm:
    """The current request's multipart form, its fields and files logged; InvalidRequest (param
    None) for a body that is not multipart/form-data, 413 for one that is too large."""
    request.max_content_length = MAX_EDIT_BODY_BYTES
    if request.mimetype != "multipart/form-data":
        raise InvalidRequest(
            "An image edit's body must be multipart/form-data (the images are files).", None
        )
    try:
        text_fields = request.form
        file_parts = request.files
    except RequestEntityTooLarge as exc:
        raise InvalidRequest(
            f"The request body is larger than {MAX_EDIT_BODY_BYTES} bytes.", None, status=413
        ) from exc
    fields = {name: text_fields[name] for name in text_fields}
    files = tuple(_received(name, part) for name, part in file_parts.items(multi=True))
    log_request_fields(dict(fields))
    log_request_files([received.log_entry() for received in files])
    return EditForm(fields=fields, files=files)


def _received(field: str, part: FileStorage) -> ReceivedFile:
    digest = hashlib.sha256()
    kept = io.BytesIO()
    size = 0
    while chunk := part.stream.read(READ_CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        if size <= MAX_INPUT_IMAGE_BYTES:
            kept.write(chunk)
    return ReceivedFile(
        field=field,
        filename=part.filename,
        content_type=part.mimetype or None,
        size=size,
        sha256=digest.hexdigest(),
        data=kept.getvalue() if size <= MAX_INPUT_IMAGE_BYTES else None,
    )


def parse_edit_request(form: EditForm, model: ModelRules, platform: Platform) -> ImageRequest:
    """Validate an edit for `model` on `platform`; raises InvalidRequest naming the field."""
    if not model.gpt_image:
        # Guess (the reference says edits take gpt-image models; dall-e-2's old edits are
        # retired with it): a DALL-E model or deployment answers 400 naming `model`.
        raise InvalidRequest(
            f"{model.name} cannot edit images; image edits take a gpt-image model.", "model"
        )
    if platform.rejects_unknown_fields:
        for name in (*form.fields, *(received.field for received in form.files)):
            if name not in KNOWN_EDIT_FIELDS and name not in (*IMAGE_FIELDS, MASK_FIELD):
                raise InvalidRequest(
                    f"Unknown parameter: '{name}'.", name, code="unknown_parameter"
                )
    payload = _typed_payload(form.fields)
    fidelity = payload.pop("input_fidelity", None)
    image_request = parse_image_request(payload, model, platform)
    fidelity = _input_fidelity(fidelity, model)
    images = _images(form)
    mask = _mask(form, images[0])
    size = image_request.size
    if size == "auto":
        size = edit_size(model, images[0].width, images[0].height)
    return replace(
        image_request,
        size=size,
        inputs=(*images, *(() if mask is None else (mask,))),
        input_fidelity=fidelity,
    )


def _typed_payload(fields: dict[str, str]) -> dict[str, object]:
    """Form text as the JSON types a generation body has; a value that is not a well-formed
    number or boolean stays a string, so parse_image_request names the field."""
    payload: dict[str, object] = {}
    for name, value in fields.items():
        if name in (*IMAGE_FIELDS, MASK_FIELD):
            param = "image" if name in IMAGE_FIELDS else name
            raise InvalidRequest(f"'{name}' must be sent as a file, not as text.", param)
        typed: object = value
        if name in INTEGER_FIELDS and INTEGER_TEXT.fullmatch(value):
            typed = int(value)
        elif name in BOOLEAN_FIELDS and value.lower() in ("true", "false"):
            typed = value.lower() == "true"
        payload[name] = typed
    return payload


def _input_fidelity(value: object, model: ModelRules) -> str | None:
    if value is None:
        return None
    allowed = INPUT_FIDELITIES.get(model.name)
    if allowed is None:
        # "For gpt-image-2, omit this parameter" (openai-python 3.51; azure-image-apis.md §9).
        raise InvalidRequest(
            f"'input_fidelity' is not supported by {model.name}; omit it.", "input_fidelity"
        )
    if value not in allowed:
        choices = ", ".join(f"'{choice}'" for choice in allowed)
        raise InvalidRequest(
            f"Invalid value for 'input_fidelity': {str(value)[:MAX_QUOTED_VALUE_CHARS]!r}. "
            f"{model.name} supports {choices}.",
            "input_fidelity",
        )
    return value  # type: ignore[return-value]


def _images(form: EditForm) -> list[InputFile]:
    received = [part for part in form.files if part.role == "image"]
    if not received:
        raise InvalidRequest(
            f"'image' is required: send 1 to {MAX_INPUT_IMAGES} image files.", "image"
        )
    if len(received) > MAX_INPUT_IMAGES:
        raise InvalidRequest(
            f"Too many images: {len(received)} were sent, at most {MAX_INPUT_IMAGES} are allowed.",
            "image",
        )
    return [
        _decoded(part, "image", f"image {number}", MAX_INPUT_IMAGE_BYTES)
        for number, part in enumerate(received, start=1)
    ]


def _mask(form: EditForm, first: InputFile) -> InputFile | None:
    received = [part for part in form.files if part.field == MASK_FIELD]
    if not received:
        return None
    if len(received) > 1:
        raise InvalidRequest(f"Send at most one 'mask' file; {len(received)} were sent.", "mask")
    mask = _decoded(received[0], "mask", "the mask", MAX_MASK_BYTES)
    if mask.format != "png":
        raise InvalidRequest(
            f"The mask must be a PNG file with an alpha channel, not {mask.format.upper()}.",
            "mask",
        )
    picture = mask.picture
    if "A" not in picture.getbands() and "transparency" not in picture.info:
        raise InvalidRequest(
            "The mask must have an alpha channel: its fully transparent pixels mark the area "
            f"to edit, and this PNG (mode {picture.mode}) has none.",
            "mask",
        )
    if (mask.width, mask.height) != (first.width, first.height):
        raise InvalidRequest(
            f"The mask is {mask.width}x{mask.height}; it must be the first image's size, "
            f"{first.width}x{first.height}.",
            "mask",
        )
    return mask


def _decoded(part: ReceivedFile, role: str, name: str, max_bytes: int) -> InputFile:
    """`part` checked and decoded; InvalidRequest naming `role` otherwise. `name` says which
    file in the message ("image 3", "the mask")."""
    if part.data is None or part.size > max_bytes:
        raise InvalidRequest(
            f"Invalid file '{role}': {name} is {part.size:,} bytes; the limit is "
            f"{max_bytes:,} bytes ({max_bytes // (1024 * 1024)} MB).",
            role,
        )
    declared = CONTENT_TYPES.get(part.content_type or "")
    if declared is None:
        supported = ", ".join(f"'{content_type}'" for content_type in CONTENT_TYPES)
        raise InvalidRequest(
            f"Invalid file '{role}': unsupported mimetype ('{part.content_type or 'none'}') "
            f"for {name}. Supported file formats are {supported}.",
            role,
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; the check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(part.data))
        actual = PIL_FORMATS.get(picture.format or "")
        width, height = picture.size
        if actual is not None and width * height <= MAX_INPUT_PIXELS:
            picture.load()
    except Image.DecompressionBombError as exc:
        # Over twice MAX_IMAGE_PIXELS: Pillow refuses to open it at all.
        raise InvalidRequest(
            f"Invalid file '{role}': {name} has more than {MAX_INPUT_PIXELS:,} pixels.", role
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidRequest(
            f"Invalid file '{role}': {name} is not a PNG, JPEG or WebP image that can be read.",
            role,
        ) from exc
    if actual is None:
        raise InvalidRequest(
            f"Invalid file '{role}': {name} is {picture.format or 'not an image'}; supported "
            "formats are PNG, JPEG and WebP.",
            role,
        )
    if actual != declared:
        # Guess (not in azure-image-apis.md): a part whose bytes contradict its Content-Type is
        # refused, as a client that labels its files wrongly has a bug worth seeing.
        raise InvalidRequest(
            f"Invalid file '{role}': {name} was sent as {part.content_type} but is a "
            f"{actual.upper()} file.",
            role,
        )
    if width * height > MAX_INPUT_PIXELS:
        raise InvalidRequest(
            f"Invalid file '{role}': {name} is {width}x{height} pixels; at most "
            f"{MAX_INPUT_PIXELS:,} pixels are allowed.",
            role,
        )
    return InputFile(
        role=role,
        format=actual,
        width=width,
        height=height,
        sha256=part.sha256,
        picture=picture,
        data=part.data,
        filename=part.filename,
    )
