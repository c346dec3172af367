"""An edit's inputs: the images and the mask a job sends, read from a request and checked.

Owns turning what a caller gave (uploaded files, ids of gallery images, a mask as a
`data:image/png;base64,` URL) into `InputFile`s on a `JobRequest`, or refusing it with
`validation.ValidationError(field, message)`. Nothing is written here: every input is checked in
full (magic bytes first, then the header's pixel count, then every pixel decoded) before
`jobs.create_job` stores any of them, so a refused request leaves no file and no row behind.

The functions the views call (HTML form, JSON API):

    request_from_form(form, files, targets) -> JobRequest
        The create form (`POST /jobs`, `/partials/jobs`): fields as `parse_job_request(...,
        from_form=True)` reads them, plus files `image` (repeated), `mask` (optional) and
        fields `reference_image` (repeated gallery image ids). Empty file inputs are ignored.
    request_from_multipart(form, files, targets) -> JobRequest
        `POST /api/jobs` as multipart/form-data: fields `prompt`, `provider`, `size`, `n`,
        `options` (a JSON object as text), files `image` (repeated) and `mask`.
    request_from_json(body, targets) -> JobRequest
        `POST /api/jobs` as JSON: the usual fields plus `reference_images` (a list of image ids)
        and `mask` (a `data:image/png;base64,...` URL).

The images go in this order: gallery references first (in the order given), then uploads; the
mask, if any, is checked against the first of them (the image page's mask is painted on its
image, which is the first reference). Gallery ids are looked up through the request's scoped
session (app.auth.scoping), so an id the viewer may not see is refused with exactly the same
message as one that does not exist.

Limits (the reference, §9): at most MAX_IMAGES images of at most MAX_INPUT_BYTES each, a mask
under MAX_MASK_BYTES; at most storage.MAX_PIXELS pixels each (a decompression bomb is refused by
its header, before any decoding).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import Image as PILImage
from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from app import storage
from app.image_models import ImageModel
from app.models import Image, ImageStatus, InputRole, db
from app.parsing import parse_id, parse_whole_number
from app.providers.catalog import Target
from app.validation import JobRequest, ValidationError, find_target, parse_job_request

MAX_IMAGES = 16
MAX_INPUT_BYTES = 50 * 1024 * 1024
# The reference: the mask must be "under 4 MB".
MAX_MASK_BYTES = 4 * 1024 * 1024 - 1
# What a file's first bytes must be: checked before Pillow sees the data.
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
)
MASK_DATA_URL_PREFIX = "data:image/png;base64,"
# Pillow modes of a PNG with a real alpha channel (what a canvas exports: RGBA).
ALPHA_MODES = ("RGBA", "LA")
FORM_FILE_FIELDS = ("image", "mask")
JSON_INPUT_FIELDS = ("reference_images", "mask")
FORM_REFERENCE_FIELD = "reference_image"


@dataclass(frozen=True)
class InputFile:
    """One checked input: either bytes to be written (`prepared`: an upload) or a file already
    in the data folder (`stored`: a gallery image, or the input of the job being retried)."""

    role: str  # InputRole
    width: int
    height: int
    content_type: str
    sha256: str
    prepared: storage.PreparedImage | None = None
    stored: storage.StoredImage | None = None
    source_image_id: int | None = None


# --- entry points for the views --------------------------------------------------------------


def request_from_form(
    form: Mapping[str, Any], files: Mapping[str, Any], targets: Sequence[Target]
) -> JobRequest:
    """The HTML create form: its fields, files `image`/`mask`, fields `reference_image`."""
    job_request = parse_job_request(form, targets, from_form=True)
    return with_inputs(
        job_request,
        targets,
        uploads=_getlist(files, "image"),
        mask_upload=_first(_getlist(files, "mask")),
        reference_ids=_getlist(form, FORM_REFERENCE_FIELD),
        reference_field=FORM_REFERENCE_FIELD,
    )


def request_from_multipart(
    form: Mapping[str, Any], files: Mapping[str, Any], targets: Sequence[Target]
) -> JobRequest:
    """`POST /api/jobs` as multipart/form-data (options as a JSON object in text)."""
    body: dict[str, Any] = {name: form[name] for name in form}
    if "options" in body:
        try:
            body["options"] = json.loads(body["options"])
        except ValueError:
            raise ValidationError("options", "Options must be a JSON object.") from None
    if isinstance(body.get("n"), str):
        # Form fields are text; a number given as digits is that number.
        number = parse_whole_number(body["n"].strip())
        body["n"] = body["n"] if number is None else number
    unknown = sorted(set(files) - set(FORM_FILE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"Unknown file field '{unknown[0]}'.")
    job_request = parse_job_request(body, targets)
    return with_inputs(
        job_request,
        targets,
        uploads=_getlist(files, "image"),
        mask_upload=_first(_getlist(files, "mask")),
    )


def request_from_json(body: Mapping[str, Any], targets: Sequence[Target]) -> JobRequest:
    """`POST /api/jobs` as JSON, with `reference_images` and a `mask` data URL."""
    plain = {name: value for name, value in body.items() if name not in JSON_INPUT_FIELDS}
    job_request = parse_job_request(plain, targets)
    references = body.get("reference_images")
    if references is not None and not isinstance(references, list):
        raise ValidationError("reference_images", "reference_images must be a list of image ids.")
    mask = body.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise ValidationError("mask", f"The mask must be a {MASK_DATA_URL_PREFIX}... URL.")
    return with_inputs(
        job_request,
        targets,
        reference_ids=references or (),
        mask_data_url=mask,
        reference_field="reference_images",
    )


def with_inputs(
    job_request: JobRequest,
    targets: Sequence[Target],
    *,
    uploads: Iterable[Any] = (),
    mask_upload: Any = None,
    reference_ids: Iterable[Any] = (),
    mask_data_url: str | None = None,
    reference_field: str = "reference_images",
) -> JobRequest:
    """`job_request` with its inputs read and checked (none: a plain generation)."""
    model = find_target(targets, job_request.provider).model
    uploads = [upload for upload in uploads if not _empty_upload(upload)]
    if _empty_upload(mask_upload):
        mask_upload = None
    reference_ids = list(reference_ids)
    if mask_upload is not None and mask_data_url:
        raise ValidationError("mask", "Give one mask, as a file or as a data URL, not both.")
    wants_mask = mask_upload is not None or bool(mask_data_url)
    if not uploads and not reference_ids:
        if wants_mask:
            raise ValidationError("mask", "A mask needs an image to edit; add an image.")
        return job_request
    check_model_edits(model)
    if len(uploads) + len(reference_ids) > MAX_IMAGES:
        raise ValidationError(
            "image",
            f"{len(uploads) + len(reference_ids)} images were given; an edit takes at most "
            f"{MAX_IMAGES}.",
        )
    images = [library_image(raw, reference_field) for raw in reference_ids]
    images += [read_upload(upload, "image") for upload in uploads]
    inputs = list(images)
    if mask_upload is not None:
        inputs.append(read_mask(_read_bounded(mask_upload, MAX_MASK_BYTES, "mask"), images[0]))
    elif mask_data_url:
        inputs.append(read_mask(decode_mask_data_url(mask_data_url), images[0]))
    return dataclasses.replace(job_request, inputs=tuple(inputs))


def check_model_edits(model: ImageModel) -> None:
    """Refuse inputs for a model that cannot edit (DALL-E), on field `image`."""
    if not can_edit(model):
        raise ValidationError(
            "image",
            f"{model.name} cannot edit images; choose a gpt-image model to use reference "
            "images or a mask.",
        )


def can_edit(model: ImageModel) -> bool:
    return model.edits


# --- reading and checking ----------------------------------------------------------------------


def read_upload(upload: Any, field: str) -> InputFile:
    """An uploaded image (FileStorage or bytes), checked in full; nothing written."""
    data = _read_bounded(upload, MAX_INPUT_BYTES, field)
    return _checked(data, field, InputRole.IMAGE)


def read_mask(data: bytes, first: InputFile) -> InputFile:
    """The mask: a PNG with an alpha channel, the first image's size, under MAX_MASK_BYTES."""
    if len(data) > MAX_MASK_BYTES:
        raise ValidationError("mask", f"The mask is larger than {_megabytes(MAX_MASK_BYTES)}.")
    if not data.startswith(MAGIC[0][0]):
        raise ValidationError("mask", "The mask must be a PNG image with transparency.")
    mask = _checked(data, "mask", InputRole.MASK)
    mode = _mode(data)
    if mode not in ALPHA_MODES:
        raise ValidationError(
            "mask",
            "The mask has no alpha channel; its transparent pixels mark the area to change, so "
            "it must be a PNG with transparency (RGBA).",
        )
    if (mask.width, mask.height) != (first.width, first.height):
        raise ValidationError(
            "mask",
            f"The mask is {mask.width}x{mask.height} pixels; it must be the size of the first "
            f"image, {first.width}x{first.height}.",
        )
    return mask


def decode_mask_data_url(raw: str) -> bytes:
    """The bytes of a `data:image/png;base64,` URL (bounded before decoding)."""
    if not raw[: len(MASK_DATA_URL_PREFIX)].lower() == MASK_DATA_URL_PREFIX:
        raise ValidationError("mask", f"The mask must be a {MASK_DATA_URL_PREFIX}... URL.")
    encoded = raw[len(MASK_DATA_URL_PREFIX) :]
    if len(encoded) > (MAX_MASK_BYTES + 2) // 3 * 4 + 4:
        raise ValidationError("mask", f"The mask is larger than {_megabytes(MAX_MASK_BYTES)}.")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("mask", "The mask's data URL is not valid base64.") from None


def library_image(raw: Any, field: str) -> InputFile:
    """A gallery image the viewer may see, used as a reference: its stored file as it is.

    Unknown, another owner's, in the trash, or not stored: all the same refusal, so the answer
    says nothing about other people's images."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)  # a JSON number gets the same bounds as text: digits up to ID_MAX
    image_id = parse_id(raw)
    image = None
    if image_id is not None:
        # The request's session is scoped to the viewer (app.auth.scoping).
        image = db.session.scalar(
            select(Image).where(
                Image.id == image_id,
                Image.status == ImageStatus.STORED,
                Image.deleted_at.is_(None),
            )
        )
    if (
        image is None
        or image.file_name is None
        or image.thumbnail_name is None
        or not storage.current().exists(image.file_name)
    ):
        shown = raw if isinstance(raw, str) and len(raw) <= 20 else "with that id"
        raise ValidationError(field, f"There is no image {shown} that you can use.")
    return stored_input(InputRole.IMAGE, storage.stored_from_row(image), image.id)


def stored_input(
    role: str, stored: storage.StoredImage, source_image_id: int | None = None
) -> InputFile:
    """An input that is a file in the data folder already (a gallery image, or an input of
    the job being retried)."""
    return _input_file(role, stored, stored=stored, source_image_id=source_image_id)


def _checked(data: bytes, field: str, role: str) -> InputFile:
    if not data:
        raise ValidationError(field, "The file is empty.")
    if sniff(data) is None:
        raise ValidationError(field, "The file is not a PNG, JPEG or WebP image.")
    try:
        prepared = storage.prepare_image(data)
    except storage.ImageRejected as error:
        raise ValidationError(field, _rejection(str(error))) from None
    return _input_file(role, prepared, prepared=prepared)


def _input_file(
    role: str, image: storage.PreparedImage | storage.StoredImage, **source: Any
) -> InputFile:
    """An InputFile described by `image` (checked bytes, or a stored file); `source` says
    which it is (`prepared=` or `stored=`, and a gallery image's `source_image_id=`)."""
    return InputFile(
        role=role,
        width=image.width,
        height=image.height,
        content_type=image.content_type,
        sha256=image.sha256,
        **source,
    )


def sniff(data: bytes) -> str | None:
    """The format the first bytes announce (PNG, JPEG, WEBP), or None."""
    for magic, name in MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _rejection(message: str) -> str:
    # storage's messages speak of a download; an input is an upload.
    return message.replace("The download is", "The file is")


def _mode(data: bytes) -> str:
    with PILImage.open(io.BytesIO(data), formats=["PNG"]) as image:
        if image.mode == "P" and "transparency" in image.info:
            return "PA"
        return image.mode


def _read_bounded(upload: Any, limit: int, field: str) -> bytes:
    """At most `limit` bytes of an upload; larger is refused without reading the rest."""
    if isinstance(upload, bytes | bytearray):
        data = bytes(upload)
    else:
        stream: BinaryIO = upload.stream if isinstance(upload, FileStorage) else upload
        data = stream.read(limit + 1)
    if len(data) > limit:
        what = "The mask" if field == "mask" else "An image"
        raise ValidationError(field, f"{what} is larger than {_megabytes(limit)}.")
    return data


def _megabytes(limit: int) -> str:
    return f"{round(limit / (1024 * 1024))} MB"


def _empty_upload(upload: Any) -> bool:
    """A file input left empty: browsers send a part with no file name and no bytes."""
    if upload is None:
        return True
    if isinstance(upload, FileStorage):
        return not upload.filename and upload.content_length in (0, None) and _peek_empty(upload)
    return isinstance(upload, bytes | bytearray) and not upload


def _peek_empty(upload: FileStorage) -> bool:
    position = upload.stream.tell()
    empty = upload.stream.read(1) == b""
    upload.stream.seek(position)
    return empty


def _getlist(source: Mapping[str, Any], name: str) -> list[Any]:
    if hasattr(source, "getlist"):
        return list(source.getlist(name))
    value = source.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _first(values: list[Any]) -> Any:
    if len(values) > 1:
        raise ValidationError("mask", "Give at most one mask.")
    return values[0] if values else None
