"""A small Azure-compatible image server for tests, written from the protocol reference only.

It is deliberately not our emulator: it knows only what ../shared/reference/azure-image-apis.md
says, so a test against it proves Atelier follows the protocol rather than the emulator's habits.
Routes: Azure's deployment route `POST /openai/deployments/{d}/images/{generations,edits}` with a
required `api-version` (§1.1, §3.1, §3.2), Azure's v1 route `POST /openai/v1/images/...` with
the deployment name in `model` (§3.6, §9), both with the `api-key` header, and OpenAI's
`POST /v1/images/...` with a bearer key and the model in `model` (§4). Generations take JSON,
edits multipart/form-data, parsed here by hand so that the bytes each file part carried are kept
exactly. Every request is recorded raw (`received`). Answers are b64_json PNGs of the size asked
for with `usage` (§3.3); with `stream` and `partial_images` (§3.5, §9) the answer is server-sent
events, which a test may replace (`stream_script`) to send what real servers might: other
framings, comments, cuts, stalls, errors.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

KEY = "independent-" + "7e" * 12
DEPLOYMENT_ROUTE = re.compile(r"/openai/deployments/([^/]+)/images/(generations|edits)")
V1_ROUTE = re.compile(r"/openai/v1/images/(generations|edits)")
OPENAI_ROUTE = re.compile(r"/v1/images/(generations|edits)")
USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
    "output_tokens": 1056,
    "total_tokens": 1106,
}


@dataclass(frozen=True)
class Part:
    """One multipart part as it arrived: its field name, file name, type and exact bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Received:
    """One request as the server read it off the wire."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    json: dict[str, Any] | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)  # form fields (not files)
    files: list[Part] = field(default_factory=list)

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Stream:
    """What a streamed answer is about, for a `stream_script`: the event type prefix
    (`image_generation` or `image_edit`), the partial frames and the final image (PNG bytes)."""

    prefix: str
    partials: list[bytes]
    final: bytes
    size: str


class Cut:
    """A script step: close the connection at once (`reset`: with a TCP reset)."""

    def __init__(self, reset: bool = False) -> None:
        self.reset = reset


class Stall:
    """A script step: send nothing for `seconds` (cut short when the server stops)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


Step = bytes | Cut | Stall
StreamScript = Callable[[Stream], Iterable[Step]]


def sse(payload: dict[str, Any] | str, event: str | None = None, *, newline: str = "\n") -> bytes:
    """One server-sent event: `event:` (when given) and `data:` lines, then a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    lines = ([f"event: {event}"] if event else []) + [f"data: {data}"]
    return (newline.join(lines) + newline + newline).encode()


def partial_event(stream: Stream, index: int, *, named: bool = True) -> bytes:
    payload = {
        "type": f"{stream.prefix}.partial_image",
        "b64_json": base64.b64encode(stream.partials[index]).decode(),
        "partial_image_index": index,
        "background": "opaque",
        "created_at": int(time.time()),
        "output_format": "png",
        "quality": "medium",
        "size": stream.size,
    }
    return sse(payload, payload["type"] if named else None)


def completed_event(stream: Stream, *, named: bool = True) -> bytes:
    payload = {
        "type": f"{stream.prefix}.completed",
        "b64_json": base64.b64encode(stream.final).decode(),
        "background": "opaque",
        "created_at": int(time.time()),
        "output_format": "png",
        "quality": "medium",
        "size": stream.size,
        "usage": USAGE,
    }
    return sse(payload, payload["type"] if named else None)


def standard_stream(stream: Stream) -> Iterable[Step]:
    """Each partial image, then the completed event (§3.5)."""
    for index in range(len(stream.partials)):
        yield partial_event(stream, index)
    yield completed_event(stream)


def png(size: str, colour: tuple[int, int, int]) -> bytes:
    width, height = (1024, 1024) if size == "auto" else (int(side) for side in size.split("x"))
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


class IndependentAzure(ThreadingHTTPServer):
    """The server; `deployments`: the deployment (or, on OpenAI's route, model) names it serves."""

    daemon_threads = True

    def __init__(self, deployments: Iterable[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        self.deployments = set(deployments)
        self.received: list[Received] = []
        # Statuses to answer before serving normally: (status, body), one per request.
        self.failures: list[tuple[int, dict[str, Any]]] = []
        self.stream_script: StreamScript = standard_stream
        self.chunked = True  # stream with chunked transfer; False: a body that ends at close
        self.answer_delay = 0.0  # seconds before any answer
        self.ignores_stream = False  # True: answer JSON even when asked to stream
        # What happens to each final image before it is sent (e.g. a C2PA signature).
        self.finish_image: Callable[[bytes], bytes] = lambda data: data
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def posts(self, route: str = "") -> list[Received]:
        return [seen for seen in self.received if seen.method == "POST" and route in seen.path]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (as the provider does after a cut or a timeout) is no error."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


@contextmanager
def running_independent_azure(deployments: Iterable[str]) -> Iterator[IndependentAzure]:
    """An IndependentAzure serving `deployments` on a thread of its own, stopped on the way out."""
    server = IndependentAzure(deployments)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(5)


def independent_settings(server: IndependentAzure) -> dict[str, str]:
    """app_factory settings for an app whose gpt-image-1 deployment is `server`'s."""
    return {
        "AZURE_OPENAI_ENDPOINT": server.url,
        "AZURE_OPENAI_API_KEY": KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1",
    }


class _Handler(BaseHTTPRequestHandler):
    server: IndependentAzure
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._json(404, {"error": {"code": "404", "message": "Resource not found"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        parts = urlsplit(self.path)
        received = Received(
            method="POST",
            path=parts.path,
            query=parse_qs(parts.query),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        self.server.record(received)
        if self.server.answer_delay:
            self.server.stopping.wait(self.server.answer_delay)
        route = _route(received.path)
        if route is None:
            return self._json(404, {"error": {"code": "404", "message": "Resource not found"}})
        api, operation, deployment = route
        if not _authorized(api, received.headers):
            return self._json(401, {"error": {"code": "401", "message": "Access denied."}})
        if api == "deployment" and not received.query.get("api-version"):
            # §1.1: the deployment route needs api-version on every call.
            return self._json(
                400, {"error": {"code": "MissingApiVersionParameter", "message": "The "
                      "api-version query parameter (?api-version=) is required."}},
            )  # fmt: skip
        problem = self._parse(received, operation)
        if problem:
            return self._json(400, {"error": {"code": "invalid_request", "message": problem}})
        if deployment is None:
            deployment = received.json.get("model") if received.json else received.field("model")
        if deployment not in self.server.deployments:
            return self._json(
                404,
                {"error": {"code": "DeploymentNotFound", "message": "The API deployment for "
                           "this resource does not exist."}},
            )  # fmt: skip
        if self.server.failures:
            status, error = self.server.failures.pop(0)
            return self._json(status, error)
        self._answer(received, operation)

    def _parse(self, received: Received, operation: str) -> str | None:
        content_type = received.headers.get("content-type", "")
        if operation == "generations":
            try:
                received.json = json.loads(received.body)
            except ValueError:
                return "The body is not JSON."
            return None if isinstance(received.json.get("prompt"), str) else "prompt is required"
        boundary = re.fullmatch(r"multipart/form-data; *boundary=\"?([^\";]+)\"?", content_type)
        if not boundary:
            return "An edit is multipart/form-data."
        try:
            parsed = parse_multipart(received.body, boundary[1].encode())
        except ValueError as error:
            return f"The multipart body is malformed: {error}"
        for part in parsed:
            if part.filename is None:
                received.fields.setdefault(part.name, []).append(part.data.decode())
            else:
                received.files.append(part)
        if not any(part.name in ("image", "image[]") for part in received.files):
            return "image is required"
        return None if received.field("prompt") else "prompt is required"

    def _answer(self, received: Received, operation: str) -> None:
        fields = received.json if received.json is not None else received.fields
        value = (lambda name: fields.get(name)) if received.json is not None else received.field
        size = str(value("size") or "1024x1024")
        n = int(value("n") or 1)
        final = self.server.finish_image(png(size, (20, 120, 200)))
        if value("stream") in (True, "true") and not self.server.ignores_stream:
            partials = [
                png(size, (40 * (i + 1), 60, 90)) for i in range(int(value("partial_images") or 0))
            ]
            prefix = "image_edit" if operation == "edits" else "image_generation"
            return self._stream(Stream(prefix, partials, final, size))
        self._json(
            200,
            {
                "created": int(time.time()),
                "data": [{"b64_json": base64.b64encode(final).decode()} for _ in range(n)],
                "usage": USAGE,
            },
        )

    def _stream(self, stream: Stream) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        if self.server.chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        for step in self.server.stream_script(stream):
            if isinstance(step, Stall):
                self.server.stopping.wait(step.seconds)
            elif isinstance(step, Cut):
                if step.reset:  # SO_LINGER 0: close() sends a TCP reset
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                self.close_connection = True
                self.connection.close()
                return
            elif self.server.chunked:
                self.wfile.write(f"{len(step):x}\r\n".encode() + step + b"\r\n")
            else:
                self.wfile.write(step)
            self.wfile.flush()
        if self.server.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _route(path: str) -> tuple[str, str, str | None] | None:
    """(api, generations|edits, the deployment when the path names it), or None."""
    if match := DEPLOYMENT_ROUTE.fullmatch(path):
        return "deployment", match[2], match[1]
    if match := V1_ROUTE.fullmatch(path):
        return "v1", match[1], None
    if match := OPENAI_ROUTE.fullmatch(path):
        return "openai", match[1], None
    return None


def _authorized(api: str, headers: dict[str, str]) -> bool:
    if api == "openai":
        return headers.get("authorization") == f"Bearer {KEY}"
    return headers.get("api-key") == KEY


def parse_multipart(body: bytes, boundary: bytes) -> list[Part]:
    """multipart/form-data (RFC 7578) split by hand, keeping each part's bytes exactly."""
    delimiter = b"--" + boundary
    if not body.startswith(delimiter + b"\r\n"):
        raise ValueError("it does not start with the boundary")
    end = body.find(b"\r\n" + delimiter + b"--")
    if end < 0:
        raise ValueError("the closing boundary is missing")
    parts = []
    for chunk in body[len(delimiter) + 2 : end].split(b"\r\n" + delimiter + b"\r\n"):
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise ValueError("a part has no blank line after its headers")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        if not disposition.startswith("form-data") or name is None:
            raise ValueError("a part is not form-data with a name")
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        parts.append(
            Part(name[1], filename[1] if filename else None, headers.get("content-type"), data)
        )
    return parts
