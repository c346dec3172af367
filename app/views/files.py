"""Image and thumbnail files, found by image id (never by a path taken from the request)."""

from __future__ import annotations

from flask import Blueprint, abort, send_file
from werkzeug.wrappers import Response

from app import library

bp = Blueprint("files", __name__, url_prefix="/files")


@bp.get("/images/<int:image_id>")
def image(image_id: int) -> Response:
    return _send(image_id, thumbnail=False)


@bp.get("/thumbs/<int:image_id>")
def thumbnail(image_id: int) -> Response:
    return _send(image_id, thumbnail=True)


def _send(image_id: int, *, thumbnail: bool) -> Response:
    found = library.image_file(image_id, thumbnail=thumbnail)
    if found is None:
        abort(404, f"There is no image {image_id}.")
    path, image = found
    response = send_file(
        path,
        mimetype="image/webp" if thumbnail else image.content_type,
        conditional=True,
        etag=f"{image.sha256}{'-t' if thumbnail else ''}",
        download_name=f"atelier-{image.job_id}-{image.index + 1}{path.suffix}",
        max_age=0,
    )
    # Ids can be reused after a delete, so the browser revalidates (a cheap 304 via the ETag).
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
