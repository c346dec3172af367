"""Content-addressed image files: their names, the URLs pages use for them, and the one way
to send one. The files blueprint serves them to the viewer; share links serve the ones a link
opens (app.views.shares).

A name is `<64 lowercase hex>.<png|jpg|webp>` for an original and
`<64 lowercase hex>-<256|512>.webp` for a thumbnail: the bytes behind it can never change, so
browsers may keep them for a year without asking again.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import abort, current_app, request, send_file, url_for
from werkzeug.wrappers import Response

from app import library, storage
from app.models import Image
from app.zipstream import image_file_name

# Private: only the signed-in browser keeps them (a shared proxy cache must not).
IMMUTABLE = "private, max-age=31536000, immutable"
ONE_YEAR = 31536000
# Anything but these names (other case, other length, dots, slashes) is not a file name here.
CONTENT_NAME = re.compile(
    r"(?P<sha>[0-9a-f]{64})(?:\.(?P<ext>png|jpg|webp)|-(?P<size>256|512)\.webp)"
)
THUMBNAIL_COLUMNS = {"256": "thumbnail_name", "512": "thumbnail_large_name"}


def content_url(image: Image, size: int | None = None, *, download: bool = False) -> str:
    """The content-addressed URL of an image's original, or of its 256/512 px thumbnail."""
    if size is not None:
        return url_for("files.content", name=f"{image.sha256}-{size}.webp")
    name = f"{image.sha256}{Path(image.file_name or '').suffix}"
    return url_for("files.content", name=name, **({"download": "1"} if download else {}))


def send_stored(name: str, **options: Any) -> Response:
    """send_file for a stored object, with the same headers on every backend: the file itself
    in the data folder (ranges, Last-Modified from its time), or the object's bytes and time
    from an object store (read whole: images are a few MB at most). 404 when it is gone, 503
    when the storage service is failing."""
    files = storage.current()
    path = files.local_path(name)
    if path is not None:
        if not path.is_file():
            abort(404, "There is no such file.")
        return send_file(path, **options)
    try:
        data, modified = files.blobs.get_with_time(name)
    except FileNotFoundError:
        abort(404, "There is no such file.")
    except storage.StorageUnavailable as error:
        current_app.logger.warning("%s not served: %s", name, error)
        abort(503, "Image storage is failing; try again in a moment.")
    modified_at = datetime.fromtimestamp(modified, UTC) if modified else None
    return send_file(io.BytesIO(data), last_modified=modified_at, **options)


def send_content(name: str, allowed: Callable[[Image], bool]) -> Response:
    """Serve the content-addressed file `name` if an image the viewer may see has it.

    The name only selects a database row (a digest and a size); the stored object comes from
    that row. Files are private to their viewer: no shared cache may keep them.
    """
    match = CONTENT_NAME.fullmatch(name)
    if match is None:
        abort(404, "There is no such file.")
    digest, extension, size = match.group("sha", "ext", "size")
    image = library.image_with_digest(digest)
    if image is None or not allowed(image):
        abort(404, "There is no such file.")
    stored_name = getattr(image, THUMBNAIL_COLUMNS[size]) if size else image.file_name
    if stored_name is None or (extension and Path(stored_name).suffix != f".{extension}"):
        abort(404, "There is no such file.")
    download = bool(extension) and request.args.get("download") == "1"
    response = send_stored(
        stored_name,
        mimetype="image/webp" if size else image.content_type,
        conditional=True,
        etag=f"{digest}-{size}" if size else digest,
        download_name=None if size else image_file_name(image),
        max_age=ONE_YEAR,
    )
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["X-Content-Type-Options"] = "nosniff"
    if download:
        response.headers["Content-Disposition"] = f'attachment; filename="{image_file_name(image)}"'
    return response
