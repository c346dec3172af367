"""What the emulator sends when a fault trigger asks it to misbehave.

Owns the broken answers that are not Azure's own errors (those are in errors.py): truncated
JSON for `[poll-garbage]` and `[garbage]`, and the bad image downloads of the `[image-*]`
triggers (see faults.py for which prompt gets which). The bodies are built so that a client
only survives them by checking what it received: lengths, content types, image headers.
"""

from __future__ import annotations

import functools
import json
import struct
import zlib
from collections.abc import Callable, Iterator

from flask import Response

from .errors import authentication_failed, blob_not_found
from .faults import Fault

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The bomb's declared size: 400 million pixels, over twice Pillow's default
# MAX_IMAGE_PIXELS (89,478,485), so Pillow's own guard refuses to open it.
BOMB_PIXELS_PER_SIDE = 20_000
BOMB_COLOUR = (230, 120, 40)
# Rows compressed per zlib call while building the bomb: about 1 MB of raw scanlines each.
BOMB_ROWS_PER_BLOCK = 400
OVERSIZED_CHUNK_BYTES = 64 * 1024
REDIRECT_HOST = "http://images.elsewhere.invalid/"
NOT_AN_IMAGE_BODY = b"<html><body>Access denied</body></html>"
# Characters of the status value left before the cut: "runn", "notR", "succ"...
GARBAGE_STATUS_CHARS = 4
# The start of a 200 body of the synchronous routes, cut inside the first image's base64
# ("iVBORw0KGgo" is a PNG signature in base64).
SYNC_GARBAGE_PREFIX = '{{"created":{created},"data":[{{"b64_json":"iVBORw0KGgoAAAANSUhEUgAA'


def garbage_operation(body: dict[str, object]) -> Response:
    """200 `application/json` whose body is `body` cut off inside its `status` value."""
    text = json.dumps(body, separators=(",", ":"))
    cut = text.index('"status":"') + len('"status":"') + GARBAGE_STATUS_CHARS
    return Response(text[:cut], status=200, mimetype="application/json")


def garbage_generation(created: int) -> Response:
    """200 `application/json` that starts like a synchronous answer and stops mid-image."""
    return Response(
        SYNC_GARBAGE_PREFIX.format(created=created), status=200, mimetype="application/json"
    )


def image_fault_response(
    fault: Fault, *, png: Callable[[], bytes], blob_name: str, oversized_bytes: int
) -> Response:
    """The answer of an image URL whose operation's prompt carries `fault`.

    `png` renders the image the URL would have served; only `[image-truncated]` needs it.
    """
    if fault is Fault.IMAGE_403:
        return authentication_failed()
    if fault is Fault.IMAGE_404:
        return blob_not_found()
    if fault is Fault.IMAGE_REDIRECT:
        return Response(status=302, headers={"Location": f"{REDIRECT_HOST}{blob_name}"})
    if fault is Fault.IMAGE_NOT_IMAGE:
        return _blob_response(NOT_AN_IMAGE_BODY)
    if fault is Fault.IMAGE_TRUNCATED:
        full = png()
        response = _blob_response(_first_half(full))
        # Announces every byte, sends half: the client must notice the broken download.
        response.headers["Content-Length"] = str(len(full))
        return response
    if fault is Fault.IMAGE_BOMB:
        return _blob_response(bomb_png())
    if fault is Fault.IMAGE_OVERSIZED:
        # A generator and no Content-Length: Werkzeug streams it with chunked encoding.
        return _blob_response(oversized_body(oversized_bytes))
    raise ValueError(f"not an image fault: {fault}")


def _blob_response(body: bytes | Iterator[bytes]) -> Response:
    response = Response(body, status=200, mimetype="image/png")
    response.headers["x-ms-blob-type"] = "BlockBlob"
    return response


def _first_half(data: bytes) -> Iterator[bytes]:
    """Yields half of `data` and stops.

    Werkzeug's server ends every answer by closing the connection (it always sends
    `Connection: close`), so the client sees the socket close short of the announced
    Content-Length. Stopping quietly, rather than raising, keeps Werkzeug from logging an
    error or appending its own 500 page to the half-sent body.
    """
    yield data[: len(data) // 2]


def oversized_body(limit: int) -> Iterator[bytes]:
    """A PNG signature, then zero filler until more than `limit` bytes were produced.

    Generated lazily from one reused chunk, so serving it costs no memory however large it is.
    """
    yield PNG_SIGNATURE
    sent = len(PNG_SIGNATURE)
    filler = bytes(OVERSIZED_CHUNK_BYTES)
    while sent <= limit:
        yield filler
        sent += len(filler)


@functools.cache
def bomb_png() -> bytes:
    """A valid single-colour PNG of BOMB_PIXELS_PER_SIDE squared pixels, about 50 KB.

    Built once (about 0.15 s). Palette mode at 1 bit per pixel keeps the raw scanlines at
    50 MB, which deflate squeezes to ~50 KB; the rows are fed to zlib in blocks, so neither
    Pillow nor a 400-million-pixel buffer is ever involved. Decoded, it is 400 MB of pixels.
    """
    side = BOMB_PIXELS_PER_SIDE
    # Filter byte 0, then all bits zero: every pixel is palette entry 0.
    row = bytes(1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    blocks, rest = divmod(side, BOMB_ROWS_PER_BLOCK)
    block = row * BOMB_ROWS_PER_BLOCK
    parts = [compressor.compress(block) for _ in range(blocks)]
    parts.append(compressor.compress(row * rest))
    parts.append(compressor.flush())
    # IHDR: width, height, bit depth 1, colour type 3 (palette), deflate, no filter, no interlace.
    header = struct.pack(">IIBBBBB", side, side, 1, 3, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", bytes(BOMB_COLOUR)),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
