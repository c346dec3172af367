"""What the emulator was asked, for tests that assert how a client behaved.

Owns `RequestLog` and the unauthenticated control routes:
- `GET /_emulator/requests` -> `{"requests": [{"method", "path", "status", "time"}, ...],
  "counts": {"submit": N, "poll": N, "delete": N, "blob": N}}`
- `POST /_emulator/reset` clears both.

A count goes up only when that route *answered* the request (status below 400): a submit that
failed validation created no operation, so it is not counted. Every request, answered or not,
is in `requests`. In-process, the same numbers are `app.extensions["emulator"].request_counts()`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from flask import Blueprint, Flask, Response, g, request

from .errors import json_response
from .state import emulator_state

REQUEST_KINDS = ("submit", "poll", "delete", "blob")
# Bounded so a long-running demo emulator cannot grow without limit; counts are not bounded.
MAX_LOGGED_REQUESTS = 10_000

bp = Blueprint("emulator_control", __name__, url_prefix="/_emulator")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    # Path only: query strings carry image signatures, and nothing here ever records headers (that
    # is where the api-key travels).
    path: str
    status: int
    time: float


class RequestLog:
    def __init__(self, max_entries: int = MAX_LOGGED_REQUESTS) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LoggedRequest] = deque(maxlen=max_entries)
        self._counts = dict.fromkeys(REQUEST_KINDS, 0)

    def record(self, method: str, path: str, status: int, kind: str | None) -> None:
        with self._lock:
            self._entries.append(LoggedRequest(method, path, status, time.time()))
            if kind is not None and status < 400:
                self._counts[kind] += 1

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


def register_request_log(app: Flask) -> None:
    app.after_request(_record)


def _record(response: Response) -> Response:
    if not request.path.startswith("/_emulator/"):
        emulator_state().request_log.record(
            request.method,
            request.path,
            response.status_code,
            g.get("emulator_request_kind"),
        )
    return response


@bp.get("/requests")
def list_requests() -> Response:
    log = emulator_state().request_log
    return json_response({"requests": log.entries(), "counts": log.counts()})


@bp.post("/reset")
def reset_requests() -> Response:
    emulator_state().request_log.reset()
    return Response(status=204)
