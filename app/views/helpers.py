"""Small helpers shared by the view modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Response, abort, jsonify, request

from app import jobs


def is_htmx() -> bool:
    """True for requests htmx made (used only to shrink error pages to fragments)."""
    return request.headers.get("HX-Request") == "true"


def api_error(
    status: int, code: str, message: str, field: str | None = None
) -> tuple[Response, int]:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return jsonify({"error": error}), status


@contextmanager
def job_action_errors() -> Iterator[None]:
    """Turn a refused job action into 404 (no such job), 429 (a quota or budget is reached) or
    409 (wrong state)."""
    try:
        yield
    except jobs.JobNotFound as error:
        abort(404, error.message)
    except jobs.LimitReached as error:
        abort(429, error.message)
    except jobs.JobConflict as error:
        abort(409, error.message)
