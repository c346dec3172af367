"""Image and thumbnail files. A file is found through an image row, never by a path taken from
the request.

Pages use content-addressed URLs (`/files/<sha256>.<ext>`, `/files/<sha256>-256.webp`,
`/files/<sha256>-512.webp`, app.views.content_files): the bytes behind such a URL can never
change, so browsers may keep them for a year without asking again. The JSON API's id URLs
(`/files/images/<id>`, `/files/thumbs/<id>`) stay: ids can be reused after a purge, so those
revalidate every time.
"""

from __future__ import annotations

from flask import Blueprint, abort, send_file
from werkzeug.wrappers import Response

from app import library
from app.views.content_files import send_content

bp = Blueprint("files", __name__, url_prefix="/files")


@bp.get("/images/<int:image_id>")
def image(image_id: int) -> Response:
    return _send_by_id(image_id, thumbnail=False)


@bp.get("/thumbs/<int:image_id>")
def thumbnail(image_id: int) -> Response:
    return _send_by_id(image_id, thumbnail=True)


@bp.get("/<name>")
def content(name: str) -> Response:
    """A file by its SHA-256, cached for a year; `?download=1` asks to save the original."""
    return send_content(name, lambda _image: True)


def _send_by_id(image_id: int, *, thumbnail: bool) -> Response:
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
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
