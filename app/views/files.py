"""Image and thumbnail files. A file is found through an image row, never by a path taken from
the request.

Pages use content-addressed URLs (`/files/<sha256>.<ext>`, `/files/<sha256>-256.webp`,
`/files/<sha256>-512.webp`, app.views.content_files): the bytes behind such a URL can never
change, so browsers may keep them for a year without asking again. The JSON API's id URLs
(`/files/images/<id>`, `/files/thumbs/<id>`) stay: ids can be reused after a purge, so those
revalidate every time.

Two downloads of an image: *Download original* (`/files/images/<id>/original`) is the stored
file, the provider's exact bytes (so its Content Credentials still validate); *Download with
prompt* (`/files/images/<id>/with-prompt`) is a modified copy with Atelier's metadata embedded
(app.pngmeta.embed_copy), named `...-with-prompt.<ext>`: changing the bytes invalidates the
provider's Content Credentials, which the page says beside the link.

An edit's inputs (`/files/inputs/<id>`, `/files/inputs/<id>/thumb`) are found through their job,
so only a viewer who may see the job gets them. A running job's latest partial frame is
`/jobs/<id>/preview`. Every file is sent as the type its stored name says, only ever PNG, JPEG or
WebP, with `nosniff`: nothing uploaded is served as something a browser could run.

With ATELIER_STORAGE_REDIRECT=on (object stores), every file here but the job preview and
*Download with prompt* (which Atelier makes) is answered, after the same lookup and scoping,
with a redirect to a short-lived signed URL of that one object (app.views.content_files).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from flask import Blueprint, abort, current_app
from flask.blueprints import BlueprintSetupState
from sqlalchemy import select
from werkzeug.wrappers import Response

from app import library, pngmeta, storage
from app.models import Image, ImageStatus, Job, JobInput, JobStatus, db
from app.views.content_files import send_content, send_stored
from app.zipstream import image_file_name, with_prompt_file_name

bp = Blueprint("files", __name__, url_prefix="/files")


@bp.get("/images/<int:image_id>")
def image(image_id: int) -> Response:
    return _send_by_id(image_id, thumbnail=False)


@bp.get("/thumbs/<int:image_id>")
def thumbnail(image_id: int) -> Response:
    return _send_by_id(image_id, thumbnail=True)


@bp.get("/images/<int:image_id>/original")
def original(image_id: int) -> Response:
    """*Download original*: the stored file, exactly the bytes the provider delivered."""
    name, image = _image_file(image_id, thumbnail=False)
    return _send_revalidated(
        name,
        mimetype=image.content_type,
        etag=image.sha256,
        download_name=image_file_name(image),
        as_attachment=True,
    )


@bp.get("/images/<int:image_id>/with-prompt")
def with_prompt(image_id: int) -> Response:
    """*Download with prompt*: a modified copy carrying the prompt and job parameters (its
    Content Credentials no longer validate); made on request, never stored."""
    name, image = _image_file(image_id, thumbnail=False)
    try:
        original_bytes = storage.current().read(name)
    except FileNotFoundError:
        abort(404, f"There is no image {image_id}.")
    except storage.StorageUnavailable as error:
        current_app.logger.warning("image %s: not read (%s)", image_id, error)
        abort(503, "Image storage is failing; try again in a moment.")
    try:
        data = pngmeta.embed_copy(original_bytes, pngmeta.row_metadata(image.job, image))
    except ValueError as error:  # the stored file is damaged (verify reports it)
        current_app.logger.warning("image %s: no copy with prompt (%s)", image_id, error)
        abort(409, "This image's file is damaged; `flask atelier verify` says more.")
    response = Response(data, mimetype=image.content_type)
    name = with_prompt_file_name(image)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return _private(response, "no-store")


@bp.get("/inputs/<int:input_id>")
def job_input(input_id: int) -> Response:
    """An edit's input image or mask, exactly as it was uploaded."""
    return _send_input(input_id, thumbnail=False)


@bp.get("/inputs/<int:input_id>/thumb")
def job_input_thumbnail(input_id: int) -> Response:
    return _send_input(input_id, thumbnail=True)


def job_preview(job_id: int) -> Response:
    """The latest partial frame of a running job that streams (404 when there is none)."""
    # A select, so the viewer's scoping applies (app.auth.scoping).
    job = db.session.scalar(select(Job).where(Job.id == job_id))
    if job is None or job.preview_name is None or job.status != JobStatus.RUNNING:
        abort(404, "This job has no preview.")
    name = job.preview_name
    # A new frame replaces the file under the same name: never keep one. Always sent by
    # Atelier, in both storage modes (a signed URL would outlive the frame).
    return send_stored(
        name,
        mimetype=_content_type(name),
        conditional=False,
        max_age=0,
        cache_control="private, no-store",
    )


@bp.record_once
def _register_preview(state: BlueprintSetupState) -> None:
    # A job's preview lives under the job's URL, outside this blueprint's /files prefix.
    state.app.add_url_rule(
        "/jobs/<int:job_id>/preview", endpoint="files.job_preview", view_func=job_preview
    )


@bp.get("/<name>")
def content(name: str) -> Response:
    """A file by its SHA-256, cached for a year; `?download=1` asks to save the original."""
    return send_content(name, lambda _image: True)


def _image_file(image_id: int, *, thumbnail: bool) -> tuple[str, Image]:
    """The stored name and row of an image the viewer may see (its thumbnail's name); 404
    otherwise (looked up by id only, never by a name from the request)."""
    image = library.get_image(image_id)
    name = None
    if image is not None and image.status == ImageStatus.STORED:
        name = image.thumbnail_name if thumbnail else image.file_name
    if image is None or name is None:
        abort(404, f"There is no image {image_id}.")
    return name, image


def _send_by_id(image_id: int, *, thumbnail: bool) -> Response:
    name, image = _image_file(image_id, thumbnail=thumbnail)
    return _send_revalidated(
        name,
        mimetype="image/webp" if thumbnail else image.content_type,
        etag=f"{image.sha256}{'-t' if thumbnail else ''}",
        download_name=f"atelier-{image.job_id}-{image.index + 1}{PurePosixPath(name).suffix}",
    )


def _send_input(input_id: int, *, thumbnail: bool) -> Response:
    # Joined to its job, so the viewer's scoping of jobs decides who may see it.
    item = db.session.scalar(
        select(JobInput).join(Job, Job.id == JobInput.job_id).where(JobInput.id == input_id)
    )
    if item is None:
        abort(404, f"There is no input {input_id}.")
    name = item.thumbnail_name if thumbnail else item.file_name
    if name is None:
        abort(404, "There is no such file.")
    suffix = PurePosixPath(name).suffix
    return _send_revalidated(
        name,
        mimetype=_content_type(name),
        etag=f"{item.sha256}{'-t' if thumbnail else ''}",
        download_name=f"atelier-{item.job_id}-{item.role}-{item.position + 1}{suffix}",
    )


def _send_revalidated(
    name: str, *, mimetype: str, etag: str, download_name: str, as_attachment: bool = False
) -> Response:
    """A stored file found by an id. Ids can be reused after a delete, so the browser
    revalidates (a cheap 304 via the ETag)."""
    return send_stored(
        name,
        mimetype=mimetype,
        as_attachment=as_attachment,
        download_name=download_name,
        conditional=True,
        etag=etag,
        max_age=0,
        cache_control="private, no-cache",
        # An id can name other bytes after a purge: the redirect is asked for again each time.
        redirect_cache="private, no-cache",
    )


def _private(response: Response, cache: str) -> Response:
    """For this viewer only (`cache`: no-cache or no-store), and never sniffed as another
    type."""
    response.headers["Cache-Control"] = f"private, {cache}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _content_type(name: str) -> str:
    """The type a stored file is sent as, from its name: only the three image types."""
    content_type: Any = storage.CONTENT_TYPES.get(PurePosixPath(name).suffix.lstrip("."))
    if content_type is None:
        abort(404, "There is no such file.")
    return content_type
