"""What the emulator was asked, for tests that assert how a client behaved.

Owns `RequestLog` and the unauthenticated control routes:
- `GET /_emulator/requests` -> `{"requests": [{"method", "path", "status", "time", "fields",
  "files"}, ...], "counts": {"submit": N, "poll": N, "delete": N, "blob": N, "generate": N}}`
- `POST /_emulator/reset` clears both (the memory of "first time only" triggers such as
  `[ratelimit]` and `[poll-500]` is not touched).

A request is listed from the moment it arrives (`time` is its arrival), with `status` null
until it is answered: a client test can see a `[hang]` request it gave up on while the
emulator is still sleeping on it.

`fields` is what a synchronous generation's JSON body set, so a client test can assert what
was sent (`model`, `size`, `quality`, `moderation`, `safety_identifier`, `user`, ...): every
top-level field except `prompt` (that one is in the images, and may be 32,000 characters),
strings cut to MAX_LOGGED_FIELD_CHARS, lists and objects left out. None for every other
request, and for a body that was not a JSON object. An image edit's `fields` are its form's
text fields, as sent (strings), `prompt` left out the same way.

`files` is an image edit's file parts, in the order received, each `{"role": "image"|"mask"|
<the part's name>, "field": "image"|"image[]"|"mask"|..., "filename", "content_type" (as the
part declared it, null if none), "size" (bytes), "sha256" (hex, of the bytes received)}`: a
test can assert exactly which bytes a client sent. Logged as the form is read, so a request
that then fails validation lists its files too. None for every other request.

Kinds: `submit`, `poll`, `delete` are the async API's routes, `blob` an image download, and
`generate` a synchronous generation or image edit on any of the synchronous routes (Azure's
deployment and v1 routes, OpenAI's `/v1` route).
A count goes up only when that route *answered* the request (status below 400): a submit or
generation that failed validation, was throttled, refused or filtered made no images, so it
is not counted. Every request, answered or not, is in `requests`. In-process, the same
numbers are `app.extensions["emulator"].request_counts()`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from flask import Blueprint, Flask, Response, g, request

from .errors import json_response
from .state import emulator_state

REQUEST_KINDS = ("submit", "poll", "delete", "blob", "generate")
# Bounded so a long-running demo emulator cannot grow without limit; counts are not bounded.
MAX_LOGGED_REQUESTS = 10_000
# A logged body field's string value is cut to this; no field the routes know is longer.
MAX_LOGGED_FIELD_CHARS = 200
# Never logged: the prompt is long and is already drawn into the images.
UNLOGGED_FIELDS = frozenset({"prompt"})

bp = Blueprint("emulator_control", __name__, url_prefix="/_emulator")


@dataclass
class LoggedRequest:
    """One request; mutable only to fill in `status`, and only under RequestLog's lock."""

    method: str
    # Path only: query strings carry image signatures, and nothing here ever records headers (that
    # is where the api-key travels).
    path: str
    status: int | None
    time: float
    # A synchronous generation's body fields (see the module docstring); None otherwise.
    fields: dict[str, object] | None = None
    # An image edit's file parts (see the module docstring); None otherwise.
    files: list[dict[str, object]] | None = None


class RequestLog:
    def __init__(self, max_entries: int = MAX_LOGGED_REQUESTS) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LoggedRequest] = deque(maxlen=max_entries)
        self._counts = dict.fromkeys(REQUEST_KINDS, 0)

    def arrived(self, method: str, path: str) -> LoggedRequest:
        """List a request as received, not yet answered; pass the result to `answered`."""
        entry = LoggedRequest(method, path, None, time.time())
        with self._lock:
            self._entries.append(entry)
        return entry

    def answered(
        self,
        entry: LoggedRequest,
        status: int,
        kind: str | None,
        fields: dict[str, object] | None = None,
        files: list[dict[str, object]] | None = None,
    ) -> None:
        """Record the answer (and the body's `fields` and `files`), and count it under `kind`
        when it succeeded."""
        with self._lock:
            # Harmless if a reset dropped the entry meanwhile: nobody lists it any more.
            entry.status = status
            entry.fields = fields
            entry.files = files
            if kind is not None and status < 400:
                self._counts[kind] += 1

    def record(
        self,
        method: str,
        path: str,
        status: int,
        kind: str | None,
        fields: dict[str, object] | None = None,
        files: list[dict[str, object]] | None = None,
    ) -> None:
        """A request that arrived and was answered at once."""
        self.answered(self.arrived(method, path), status, kind, fields, files)

    def entries(self) -> list[dict[str, object]]:
        with self._lock:
            return [asdict(entry) for entry in self._entries]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts = dict.fromkeys(REQUEST_KINDS, 0)


def mark_request_kind(kind: str) -> None:
    """Called by a view to say which count this request adds to if it succeeds."""
    g.emulator_request_kind = kind


def start_generate() -> float:
    """Called first by a generation or edit route: the request counts as "generate" if it
    succeeds. Returns when it arrived (time.monotonic()), for the latency."""
    mark_request_kind("generate")
    return time.monotonic()


def log_request_fields(payload: dict[str, object]) -> None:
    """Called by a synchronous route with the JSON body it read, for the log's `fields`."""
    fields: dict[str, object] = {}
    for name, value in payload.items():
        if name in UNLOGGED_FIELDS or isinstance(value, list | dict):
            continue
        if isinstance(value, str):
            value = value[:MAX_LOGGED_FIELD_CHARS]
        fields[str(name)] = value
    g.emulator_request_fields = fields


def log_request_files(files: list[dict[str, object]]) -> None:
    """Called by an edit route with its file parts' descriptions, for the log's `files`."""
    g.emulator_request_files = files


def register_request_log(app: Flask) -> None:
    """Call before registering any other before_request hook: one that answers early (the
    gateway's 401) skips the hooks after it, and the request must be listed all the same."""
    app.before_request(_arrive)
    app.after_request(_record)


def _arrive() -> None:
    if not request.path.startswith("/_emulator/"):
        g.emulator_log_entry = emulator_state().request_log.arrived(request.method, request.path)


def _record(response: Response) -> Response:
    if request.path.startswith("/_emulator/"):
        return response
    log = emulator_state().request_log
    kind = g.get("emulator_request_kind")
    fields = g.get("emulator_request_fields")
    files = g.get("emulator_request_files")
    entry = g.get("emulator_log_entry")
    if entry is None:
        log.record(request.method, request.path, response.status_code, kind, fields, files)
    else:
        log.answered(entry, response.status_code, kind, fields, files)
    return response


@bp.get("/requests")
def list_requests() -> Response:
    log = emulator_state().request_log
    return json_response({"requests": log.entries(), "counts": log.counts()})


@bp.post("/reset")
def reset_requests() -> Response:
    emulator_state().request_log.reset()
    return Response(status=204)
