"""Content-addressed image files: their names, the URLs pages use for them, and the one way
to send one. The files blueprint serves them to the viewer; share links serve the ones a link
opens (app.views.shares).

A name is `<64 lowercase hex>.<png|jpg|webp>` for an original and
`<64 lowercase hex>-<256|512>.webp` for a thumbnail: the bytes behind it can never change, so
browsers may keep them for a year without asking again.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from flask import Flask, abort, current_app, redirect, request, send_file, url_for
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import is_resource_modified, parse_range_header
from werkzeug.wrappers import Response

from app import library, storage
from app.blobstore import BlobStore, ObjectStream, SignedResponse, SignedUrls
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
STORAGE_FAILING = "Image storage is failing; try again in a moment."
# Requests that need the object's size or time before anything is sent.
NEEDS_METADATA = ("Range", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range")
EMPTY_BODY: tuple[bytes, ...] = ()
SIGNED_URLS = "atelier_signed_urls"  # the app.extensions key of its SignedUrls
# A redirect is kept by the browser until this long before the signed URL in it expires.
REDIRECT_MARGIN_SECONDS = 120


def content_url(image: Image, size: int | None = None, *, download: bool = False) -> str:
    """The content-addressed URL of an image's original, or of its 256/512 px thumbnail."""
    if size is not None:
        return url_for("files.content", name=f"{image.sha256}-{size}.webp")
    name = f"{image.sha256}{Path(image.file_name or '').suffix}"
    return url_for("files.content", name=name, **({"download": "1"} if download else {}))


def send_stored(
    name: str,
    *,
    mimetype: str,
    conditional: bool,
    max_age: int,
    cache_control: str,
    etag: str | None = None,
    download_name: str | None = None,
    as_attachment: bool = False,
    disposition: str | None = None,
    redirect_cache: str | None = None,
) -> Response:
    """Send a stored object with the same headers on every backend (send_file's: type, length,
    ETag, Last-Modified, Accept-Ranges, Expires, Content-Disposition): the file itself in the
    data folder, or the object streamed from an object store. Every answer is for this viewer
    only (`cache_control` replaces send_file's Cache-Control) and never sniffed; `disposition`
    replaces send_file's Content-Disposition.

    On an object store a conditional request whose If-None-Match holds `etag` (known from the
    row) is answered 304 before any storage call. A Range, If-Modified-Since or If-Match
    request needs the object's size or time first (one HEAD), then reads only what it sends;
    any other request opens the object once and streams it. 404 when it is gone, 503 when the
    storage service is failing.

    `redirect_cache` marks a request that, when ATELIER_STORAGE_REDIRECT is on, is answered
    with a redirect to a short-lived signed URL of the object (its Content-Type and
    Content-Disposition fixed by the signature) with this Cache-Control ("": kept while the
    URL still works)."""
    files = storage.current()
    path = files.local_path(name)
    options: dict[str, Any] = {
        "mimetype": mimetype,
        "conditional": conditional,
        "max_age": max_age,
        "etag": etag,
        "download_name": download_name,
        "as_attachment": as_attachment,
    }
    if path is not None:
        if not path.is_file():
            abort(404, "There is no such file.")
        return _finish(send_file(path, **options), cache_control, disposition)
    # As send_file names a file sent from a path (its own name) when no name is given.
    options["download_name"] = download_name or PurePosixPath(name).name
    if conditional and etag and _unchanged(etag):
        # The browser holds these bytes (the ETag names them): no storage call at all.
        response = _object_response(EMPTY_BODY, None, None, **options)
        return _finish(response, cache_control, disposition)
    try:
        if redirect_cache is not None and current_app.config["ATELIER_STORAGE_REDIRECT"] == "on":
            if disposition is None:
                disposition = content_disposition(options["download_name"], as_attachment)
            return _redirect(name, SignedResponse(mimetype, disposition, IMMUTABLE), redirect_cache)
        if request.method == "GET" and not any(h in request.headers for h in NEEDS_METADATA):
            stream = files.blobs.open(name)
            body = ObjectBody(files.blobs, name, stream.size, stream)
            modified = stream.modified
        else:
            found = files.blobs.stat(name)
            if found is None:
                raise storage.ObjectMissing(name)
            body = ObjectBody(files.blobs, name, found.size)
            modified = found.modified
    except FileNotFoundError:
        abort(404, "There is no such file.")
    except storage.StorageUnavailable as error:
        current_app.logger.warning("%s not served: %s", name, error)
        abort(503, STORAGE_FAILING)
    response = _object_response(body, body.size, modified, **options)
    return _finish(response, cache_control, disposition)


def _finish(response: Response, cache_control: str, disposition: str | None) -> Response:
    response.headers["Cache-Control"] = cache_control
    response.headers["X-Content-Type-Options"] = "nosniff"
    if disposition is not None:
        response.headers["Content-Disposition"] = disposition
    return response


def _unchanged(etag: str) -> bool:
    """Whether the request's If-None-Match names `etag` (and nothing asks more than that).

    A browser sends If-Modified-Since beside it; with If-None-Match present it does not count
    (RFC 9110 13.1.3), so it needs no object time."""
    asks_more = ("Range", "If-Match", "If-Unmodified-Since", "If-Range")
    if "If-None-Match" not in request.headers or any(h in request.headers for h in asks_more):
        return False
    return not is_resource_modified(request.environ, etag=etag)


def _object_response(
    body: Any,
    size: int | None,
    modified: float | None,
    *,
    mimetype: str,
    conditional: bool,
    max_age: int,
    etag: str | None,
    download_name: str | None,
    as_attachment: bool,
) -> Response:
    """What send_file makes of a file, for a streamed object (its headers, set the same way)."""
    response = current_app.response_class(body, mimetype=mimetype, direct_passthrough=True)
    if download_name is not None:
        response.headers["Content-Disposition"] = content_disposition(download_name, as_attachment)
    if size is not None:
        response.content_length = size
    if modified:
        response.last_modified = datetime.fromtimestamp(modified, UTC)
    response.cache_control.no_cache = True
    if max_age > 0:
        response.cache_control.no_cache = None
        response.cache_control.public = True
    response.cache_control.max_age = max_age
    response.expires = int(time.time() + max_age)
    if etag:
        response.set_etag(etag)
    if conditional:
        try:
            response.make_conditional(request.environ, accept_ranges=True, complete_length=size)
        except RequestedRangeNotSatisfiable:
            response.close()
            raise
        if response.status_code == 206:
            body.expect(request.headers.get("Range"))
    return response


def content_disposition(download_name: str, as_attachment: bool) -> str:
    """The Content-Disposition send_file gives a file sent under `download_name`."""
    try:
        download_name.encode("ascii")
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", download_name).encode("ascii", "ignore")
        quoted = quote(download_name, safe="!#$&+-.^_`|~")  # RFC 5987 attr-char
        names = {"filename": simple.decode("ascii"), "filename*": f"UTF-8''{quoted}"}
    else:
        names = {"filename": download_name}
    headers = Headers()
    headers.set("Content-Disposition", "attachment" if as_attachment else "inline", **names)
    return headers["Content-Disposition"]


def _redirect(name: str, signed: SignedResponse, cache: str) -> Response:
    """A redirect to a signed URL of `name` (StorageUnavailable when signing fails). It has no
    ETag: a browser must never revalidate it into reusing a URL that has expired."""
    url, lifetime = signed_urls().get(name, signed)
    response = redirect(url, 302)
    # Kept by the browser only while the URL in it still works.
    response.headers["Cache-Control"] = cache or (
        f"private, max-age={max(0, lifetime - REDIRECT_MARGIN_SECONDS)}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def signed_urls(app: Flask | None = None) -> SignedUrls:
    """The app's signed-URL maker (made once, for its store)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(SIGNED_URLS)
    if found is None:
        found = app.extensions.setdefault(SIGNED_URLS, SignedUrls(storage.current(app).blobs))
    return found


class ObjectBody:
    """A response body that reads a stored object as it is sent, a chunk at a time.

    Opened at once (`stream`) or at the first chunk; before that it can seek, so werkzeug's
    range handling (which seeks to the range's start) makes it read only the range."""

    def __init__(
        self, blobs: BlobStore, name: str, size: int, stream: ObjectStream | None = None
    ) -> None:
        self.blobs, self.name, self.size = blobs, name, size
        self.stream = stream
        self.position = 0
        self.end: int | None = None  # where a range read may stop (set by `expect`)

    def expect(self, range_header: str | None) -> None:
        """The single range werkzeug is about to send: read no further than its end."""
        parsed = parse_range_header(range_header)
        bounds = parsed.range_for_length(self.size) if parsed is not None else None
        if bounds is not None:
            self.end = bounds[1]

    def seekable(self) -> bool:
        return self.stream is None

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.stream is not None or whence != 0:
            raise OSError("an object being read cannot seek")
        self.position = offset
        return offset

    def tell(self) -> int:
        return self.position

    def __iter__(self) -> ObjectBody:
        return self

    def __next__(self) -> bytes:
        if self.stream is None:
            end = self.size if self.end is None else self.end
            self.stream = self.blobs.open(self.name, self.position, end - self.position)
        piece = next(self.stream.chunks)
        self.position += len(piece)
        return piece

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


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
    return send_stored(
        stored_name,
        mimetype="image/webp" if size else image.content_type,
        conditional=True,
        etag=f"{digest}-{size}" if size else digest,
        download_name=None if size else image_file_name(image),
        disposition=f'attachment; filename="{image_file_name(image)}"' if download else None,
        max_age=ONE_YEAR,
        cache_control=IMMUTABLE,
        redirect_cache="",
    )
