"""Structured logs: one line per record in logfmt (`key=value` pairs), one per request, one per
job transition.

A line looks like

    ts=2026-11-25T09:56:20.123Z level=info logger=app.jobs msg="job 12 submitted"
    event=job.submitted job_id=12 status=running phase=polling

(on one line). `ts`, `level`, `logger` and `msg` come first and are always there; the fields a
caller passes with `extra={"fields": {...}}` follow. A value with spaces, quotes, `=` or control
characters is written as a JSON string, so every record stays on one line (tracebacks included,
in `exc=`). logfmt rather than JSON lines because it is readable in a terminal and still parsed
by Loki, Vector, Datadog and `grep job_id=12`.

Request lines carry the method, the path (never the query string, which may carry secrets),
the status, the duration and the client address; never headers. They are logged by the
`app.requests` logger; health probes and metric scrapes at DEBUG, so they do not drown the rest.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

from app.config import SECRET_SETTINGS

FIELDS = "fields"  # the `extra` key structured fields travel under
REDACTED = "[redacted]"
_secrets: set[str] = set()
REQUEST_LOG = logging.getLogger("app.requests")
# Probes and scrapes come every few seconds; at DEBUG they stay out of an INFO log.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=... logger=... msg=...` then the record's fields, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        pairs: list[tuple[str, Any]] = [
            ("ts", created.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        pairs.extend((getattr(record, FIELDS, None) or {}).items())
        if record.exc_info:
            pairs.append(("exc", self.formatException(record.exc_info)))
        if record.stack_info:
            pairs.append(("stack", self.formatStack(record.stack_info)))
        line = " ".join(f"{key}={_value(value)}" for key, value in pairs if value is not None)
        return redact(line)


def register_secrets(*values: str | None) -> None:
    """Never let these values (API keys, passwords) reach a log line (ASVS 7.1.1).

    Every record's message is redacted when it is made, whatever handler shows it later, and
    every formatted line again (fields, tracebacks).
    """
    fresh = {value for value in values if value and len(value) >= 8}
    if fresh - _secrets:
        _secrets.update(fresh)
        if not getattr(logging.getLogRecordFactory(), "atelier_redacting", False):
            logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redacting_factory(base: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        if _secrets:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        return record

    factory.atelier_redacting = True  # type: ignore[attr-defined]
    return factory


def _value(value: Any) -> str:
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return json.dumps(text, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    """Log structured lines to stderr (what `python -m app` and `flask atelier worker` call)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Werkzeug's own access line repeats each request with its query string; ours replaces it.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # azure-core logs each storage request and response (headers included) at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)


def event(logger: logging.Logger, message: str, name: str, **fields: Any) -> None:
    """Log `message` at INFO with `event=name` and the given fields."""
    logger.info(message, extra={FIELDS: {"event": name, **fields}})


def job_event(
    logger: logging.Logger, job_id: int, what: str, status: str | None, **fields: Any
) -> None:
    """One line per job transition: `event=job.<what> job_id=<id> status=<status> ...`."""
    event(logger, f"job {job_id} {what}", f"job.{what}", job_id=job_id, status=status, **fields)


def init_app(app: Flask) -> None:
    """Redact the app's secrets from every log line; log one line per request when its
    response is ready (or when it raised)."""
    register_secrets(*(app.config[name] for name in SECRET_SETTINGS), app.secret_key)
    app.before_request(_start_timer)
    app.after_request(_log_response)
    app.teardown_request(_log_unhandled)


def _start_timer() -> None:
    g.atelier_request_started = time.perf_counter()


def _log_response(response: Response) -> Response:
    _log_request(response.status_code)
    return response


def _log_unhandled(error: BaseException | None) -> None:
    if error is not None and not g.get("atelier_request_logged"):
        _log_request(500)


def _loggable_path() -> str:
    """The path, with a share link's token (a credential) left out."""
    if request.path.startswith("/s/"):
        rest = request.path[3:].partition("/")[2]
        return "/s/[token]" + (f"/{rest}" if rest else "")
    return request.path


def _log_request(status: int) -> None:
    started = g.get("atelier_request_started")
    g.atelier_request_logged = True
    duration_ms = None if started is None else round((time.perf_counter() - started) * 1000, 1)
    level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
    REQUEST_LOG.log(
        level,
        "%s %s %s",
        request.method,
        _loggable_path(),
        status,
        extra={
            FIELDS: {
                "event": "http.request",
                "method": request.method,
                "path": _loggable_path(),
                "status": status,
                "duration_ms": duration_ms,
                "remote_addr": request.remote_addr,
            }
        },
    )
