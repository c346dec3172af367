"""The generated images, served like Azure Storage SAS URLs on the emulator's own host.

Owns the image URL format and its signature, the cache of rendered (and C2PA-signed) PNGs and
the blob route:
`GET /blobs/private/images/{operation_id}/generated_{NN}.png?se=<expiry>&sig=<signature>`,
shaped like Azure's `https://dalleproduse.blob.core.windows.net/private/images/<guid>/
generated_00.png?se=...&sig=...`. Like a SAS URL it needs no api-key: the signature is the
credential, and a wrong, missing or expired one gets Azure Storage's XML 403. The synchronous
routes' `url` answers are stored as finished operations (see operations.py) and served here too,
so the `[image-*]` fault triggers (faults.py) break both kinds of URL alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from .content_credentials import ContentSigner, break_data_hash
from .drawing import render_placeholder
from .errors import authentication_failed, blob_not_found
from .fault_responses import image_fault_response
from .faults import breaks_credentials, image_fault
from .operations import Operation
from .request_log import mark_request_kind
from .state import emulator_state

BLOB_NAME = re.compile(r"generated_(\d{2})\.png")
# Enough for the largest operation (n=10) plus a few recent ones.
IMAGE_CACHE_SIZE = 32
# SAS `se` format, e.g. 2023-06-14T17:16:39Z.
EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

bp = Blueprint("emulator_blobs", __name__, url_prefix="/blobs/private/images")


def format_expiry(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime(EXPIRY_FORMAT)


def sign(secret: str, operation_id: str, index: int, expiry: str) -> str:
    """URL-safe base64 HMAC-SHA256 over `operation_id/index/expiry`, unpadded."""
    message = f"{operation_id}/{index}/{expiry}".encode()
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def blob_url(base_url: str, secret: str, operation: Operation, index: int) -> str:
    """Absolute, signed URL of image `index`, valid until the operation expires."""
    expiry = format_expiry(operation.expires)
    query = urlencode({"se": expiry, "sig": sign(secret, operation.id, index, expiry)})
    return f"{base_url}blobs/private/images/{operation.id}/generated_{index:02d}.png?{query}"


class ImageCache:
    """Rendered and signed PNG bytes per (operation id, index), least recently used dropped first.

    Rendering takes tens of milliseconds and clients (and the b64_json poll) fetch the same
    image repeatedly, so a small cache avoids redrawing. Rendering happens outside the lock:
    two threads may draw the same image at once, which is harmless (it is deterministic).
    """

    def __init__(self, signer: ContentSigner, max_items: int = IMAGE_CACHE_SIZE) -> None:
        self._signer = signer
        self._max_items = max_items
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def get(self, operation: Operation, index: int) -> bytes:
        key = (operation.id, index)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        png = self._signer.sign(
            render_placeholder(
                operation.prompt, index, operation.n, operation.size, model=operation.model
            ),
            "png",
            model=operation.model,
        )
        if breaks_credentials(operation.prompt):
            png = break_data_hash(png, "png")
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self._max_items:
                self._items.popitem(last=False)
        return png


@bp.get("/<operation_id>/<blob_name>")
def download_blob(operation_id: str, blob_name: str) -> Response:
    mark_request_kind("blob")
    state = emulator_state()
    match = BLOB_NAME.fullmatch(blob_name)
    if match is None:
        return blob_not_found()
    index = int(match.group(1))

    # Signature before existence, as Azure Storage does: an unsigned request learns nothing.
    expiry = request.args.get("se", "")
    signature = request.args.get("sig", "")
    expected = sign(state.signing_secret, operation_id, index, expiry)
    if not expiry or not hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii")):
        return authentication_failed()
    now = state.store.clock()
    expires_at = _parse_expiry(expiry)
    if expires_at is None or expires_at <= now:
        # Guess (UNCONFIRMED in azure-image-apis.md §2.4): the wording of Azure Storage's
        # AuthenticationErrorDetail for an expired SAS; the reference does not quote one.
        return authentication_failed(
            f"Signature not valid in the specified time frame: Expiry [{expiry}] - "
            f"Current [{format_expiry(int(now))}]"
        )

    operation = state.store.get(operation_id)
    if operation is None or not operation.has_image(index, now):
        return blob_not_found()
    fault = image_fault(operation.prompt)
    if fault is not None:
        # After the signature and existence checks: the fault stands in for a real download.
        return image_fault_response(
            fault,
            png=lambda: state.images.get(operation, index),
            blob_name=blob_name,
            oversized_bytes=state.config.oversized_bytes,
        )
    png = state.images.get(operation, index)
    response = Response(png, mimetype="image/png")
    response.headers["x-ms-blob-type"] = "BlockBlob"
    response.last_modified = datetime.fromtimestamp(operation.finished, UTC)
    response.set_etag(hashlib.sha256(png).hexdigest()[:32])
    # Answers If-None-Match / If-Modified-Since with 304, like a storage account would.
    response = response.make_conditional(request)
    # make_conditional adds a Date header, and Werkzeug's server always sends its own.
    response.headers.remove("Date")
    return response


def _parse_expiry(expiry: str) -> float | None:
    """Unix time of an `se` value, None if it is not in the SAS format."""
    try:
        return datetime.strptime(expiry, EXPIRY_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
