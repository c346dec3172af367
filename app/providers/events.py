"""Reading a `text/event-stream` answer (server-sent events) within time and size limits.

The image APIs stream partial images as server-sent events (azure-image-apis.md §3.5, §9).
`read_events()` turns the body of a 200 answer into `Event`s, following the WHATWG parsing rules
(lines end in CRLF, LF or CR; `:` starts a comment or keep-alive; several `data:` lines join with
newlines; a blank line ends an event) and tolerating servers that put the type only inside the
JSON. Every read has its own timeout, and the whole stream a deadline, so a stalled stream ends
instead of holding a worker thread. Anything that breaks the stream after it began (a reset, a
timeout, a cut connection, bytes that are not UTF-8, an event larger than allowed) raises
`StreamBroke` with a short reason; the caller decides what that means for the request.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import requests
import urllib3

READ_CHUNK = 64 * 1024
LINE_END = re.compile(rb"\r\n|\r|\n")


class StreamBroke(Exception):
    """The event stream ended abnormally; the message says how, in a few words."""


@dataclass(frozen=True)
class Event:
    """One dispatched event: its `event:` name (None when the server sent none) and its data."""

    name: str | None
    data: str


def read_events(
    response: requests.Response, *, read_timeout: float, deadline: float, max_event_bytes: int
) -> Iterator[Event]:
    """The events of a streamed response, in order, until the server ends the stream.

    `read_timeout`: the longest wait for any bytes; `deadline`: a `time.monotonic()` value the
    whole stream must end by; `max_event_bytes`: the largest line accepted (an event carries at
    most one image). An event whose blank line never came is still dispatched when the stream
    ends after a complete line, since a server may close right after its last event.
    """
    name: str | None = None
    data: list[str] = []
    for raw_line in _lines(_chunks(response, read_timeout, deadline), max_event_bytes):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            raise StreamBroke("it sent bytes that are not UTF-8 text") from None
        if not line:
            if data:
                yield Event(name, "\n".join(data))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue  # a comment, used as a keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value or None
        elif field == "data":
            data.append(value)
        # `id`, `retry` and unknown fields mean nothing for a single image request.
    if data:
        yield Event(name, "\n".join(data))


def _chunks(response: requests.Response, read_timeout: float, deadline: float) -> Iterator[bytes]:
    """The body as it arrives: each read returns what the network has (`read1`), so an event
    is seen when it comes, whether the body is chunked or simply runs until the server closes."""
    raw = response.raw
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StreamBroke("it did not finish within the generation timeout")
        wait = min(read_timeout, remaining)
        _set_read_timeout(raw, wait)
        try:
            chunk = raw.read1(READ_CHUNK, decode_content=True)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as error:
            raise StreamBroke(_why(error, wait, read_timeout)) from None
        if not chunk:
            return
        yield chunk


def _set_read_timeout(raw: urllib3.BaseHTTPResponse, seconds: float) -> None:
    """Bound the next read of the socket under `raw` (the request's own timeout applied to the
    wait for the headers, which may be as long as a whole generation)."""
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(seconds)


def _why(error: Exception, wait: float, read_timeout: float) -> str:
    if isinstance(error, urllib3.exceptions.ReadTimeoutError | socket.timeout):
        if wait < read_timeout:
            return "it did not finish within the generation timeout"
        return f"nothing arrived for {read_timeout:g} s"
    return f"the connection broke off ({type(error).__name__})"


def _lines(chunks: Iterator[bytes], max_line_bytes: int) -> Iterator[bytes]:
    """Lines without their ends; a CRLF split between two chunks is one line end. A last line
    without its line end is dropped: the stream was cut in the middle of it."""
    parts: list[bytes] = []
    size = 0
    after_cr = False
    for chunk in chunks:
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        start = 0
        for match in LINE_END.finditer(chunk):
            parts.append(chunk[start : match.start()])
            yield b"".join(parts)
            parts, size = [], 0
            start = match.end()
        rest = chunk[start:]
        if rest:
            parts.append(rest)
            size += len(rest)
            if size > max_line_bytes:
                raise StreamBroke(f"it sent an event larger than {max_line_bytes} bytes")
