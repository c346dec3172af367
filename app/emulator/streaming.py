"""Streamed answers: server-sent events with partial frames (azure-image-apis.md §3.5, §9).

Owns `stream_images`, the 200 `text/event-stream` answer to a valid `stream: true` request
(JSON on generations, the form field `stream=true` on edits), and the stream faults'
behaviour (faults.py decides which prompt gets which). Each event is written as
`event: <type>\\ndata: <json>\\n\\n`:

- `partial_images` (0-3) events `image_generation.partial_image` (an edit:
  `image_edit.partial_image`) with `type`, `b64_json`, `partial_image_index`, `background`,
  `created_at`, `output_format`, `quality` and `size`: real images of the final size, coarser
  versions of the final image (the first the coarsest), labelled "partial frame i of k";
- then one `image_generation.completed` / `image_edit.completed` with the same fields (no
  index) plus `usage`: the final image, byte for byte what the same request without `stream`
  would have drawn.

The events are spread over the configured latency: partial i is sent at latency*(i+1)/(k+1)
after the request arrived, the completed event at latency. A stream carries one image (n = 1;
image_requests.py refuses `stream` with n > 1).

Faults: `[stream-slow]` waits `slow_seconds` before each event after the first (with no
partial frames, before the only one); `[stream-cut]` closes the connection after the first
partial frame (with none, before any event), without the end of the chunked body, as a
connection reset looks to the client; `[stream-error]` sends an `error` event instead of
what would have followed the first partial frame, then ends the stream.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator

from flask import Response
from PIL import Image, ImageDraw

from .config import EmulatorConfig
from .drawing import draw_bands, encode_image
from .errors import SERVER_ERROR_MESSAGE
from .faults import Fault
from .image_requests import ImageRequest

# Partial frame i of k is the final image shrunk 2**(FINEST_SHRINK_BITS + k - 1 - i) times and
# blown up again: the first the coarsest, each later one twice as fine, the last shrunk
# 2**FINEST_SHRINK_BITS times, so every frame is visibly blurred, never the final image.
FINEST_SHRINK_BITS = 3
PARTIAL_TITLE = "ATELIER EMULATOR · partial frame {number} of {count}"


def stream_images(
    image_request: ImageRequest,
    picture: Image.Image,
    *,
    settings: dict[str, object],
    usage: dict[str, object],
    started: float,
    config: EmulatorConfig,
    clock: Callable[[], float],
    fault: Fault | None,
    sign: Callable[[bytes], bytes],
) -> Response:
    """The event stream for `picture`, the request's one image (not yet encoded).

    `settings` are the resolved `background`, `output_format`, `quality` and `size` every
    event repeats; `started` is when the request arrived (time.monotonic()); `sign` gives the
    encoded final image its Content Credentials. Every frame is
    encoded before the answer starts, so the stream only waits and writes.
    """
    kind = "image_edit" if image_request.is_edit else "image_generation"
    output_format, quality = image_request.output_format, image_request.output_compression
    count = image_request.partial_images
    partials = [
        encode_image(partial_frame(picture, index, count), output_format, quality)
        for index in range(count)
    ]
    # Only the final image carries Content Credentials; partial frames are drafts.
    final = sign(encode_image(picture, output_format, quality))

    def event(event_type: str, image: bytes, **extra: object) -> bytes:
        data = {
            "type": event_type,
            "b64_json": base64.b64encode(image).decode("ascii"),
            **extra,
            "created_at": int(clock()),
            **settings,
        }
        return sse(event_type, data)

    def events() -> Iterator[bytes]:
        # Nothing, written: Werkzeug sends the status and headers now, as a streaming server
        # does before its first event (and a cut before any event then closes the connection
        # instead of leaving the client waiting for an answer).
        yield b""
        for index, frame in enumerate(partials):
            _wait_until(started + config.latency * (index + 1) / (count + 1))
            if fault is Fault.STREAM_SLOW and index > 0:
                time.sleep(config.slow_seconds)
            yield event(f"{kind}.partial_image", frame, partial_image_index=index)
            if index == 0 and fault is Fault.STREAM_CUT:
                raise ConnectionAbortedError("[stream-cut]: the emulator drops the stream")
            if index == 0 and fault is Fault.STREAM_ERROR:
                yield stream_error_event()
                return
        if not partials and fault is Fault.STREAM_CUT:
            raise ConnectionAbortedError("[stream-cut]: the emulator drops the stream")
        if not partials and fault is Fault.STREAM_ERROR:
            yield stream_error_event()
            return
        _wait_until(started + config.latency)
        if fault is Fault.STREAM_SLOW:
            time.sleep(config.slow_seconds)
        yield event(f"{kind}.completed", final, usage=usage)

    response = Response(events(), status=200, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    return response


def sse(event_type: str, data: dict[str, object]) -> bytes:
    """One server-sent event: `event: <type>`, `data: <compact JSON>`, a blank line."""
    body = json.dumps(data, separators=(",", ":"))
    return f"event: {event_type}\ndata: {body}\n\n".encode()


def stream_error_event() -> bytes:
    """The `error` event of `[stream-error]`.

    Guess (azure-image-apis.md does not show an image stream's error event): OpenAI's error
    envelope under `error`, with `type: error`, which is what openai-python's stream reader
    looks for (`data.get("error")`) and turns into an APIError.
    """
    return sse(
        "error",
        {
            "type": "error",
            "error": {
                "message": SERVER_ERROR_MESSAGE,
                "type": "server_error",
                "param": None,
                "code": "server_error",
            },
        },
    )


def partial_frame(picture: Image.Image, index: int, count: int) -> Image.Image:
    """Partial frame `index` (0-based) of `count`: `picture` shrunk and blown up again (the
    first the coarsest), labelled as a partial frame, the same size and mode."""
    width, height = picture.size
    shrink = 2 ** (FINEST_SHRINK_BITS + count - 1 - index)
    small = picture.resize(
        (max(1, width // shrink), max(1, height // shrink)), Image.Resampling.BOX
    )
    frame = small.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(frame, "RGBA")
    title = PARTIAL_TITLE.format(number=index + 1, count=count)
    draw_bands(draw, width, height, title, "still drawing: the final image follows")
    return frame


def _wait_until(moment: float) -> None:
    remaining = moment - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
