"""Small helpers shared by the view modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Response, abort, current_app, has_request_context, jsonify, request, url_for

from app import jobs
from app.parsing import MAX_JSON_DEPTH, json_problem


def is_htmx() -> bool:
    """True for requests htmx made. Only answers about failures depend on it: an error is a
    fragment instead of a page, and sign-in is asked for with HX-Redirect instead of a 303.
    Partials never sniff it; they have their own URLs."""
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


def json_body() -> tuple[Any, str | None]:
    """The request's JSON body and None, or None and why it cannot be used."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # the parser gives up far deeper than we allow
        return None, f"The JSON body nests more than {MAX_JSON_DEPTH} levels deep."
    if body is None:
        return None, "The request body must be a JSON object."
    problem = json_problem(body)
    return (None, problem) if problem else (body, None)


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL for share links and API answers. With ATELIER_PUBLIC_URL it is built on
    that URL, never on the request's Host header; without it, on the request's host, which the
    host check (app.views) has let through only when it is a trusted one."""
    public = current_app.config["ATELIER_PUBLIC_URL"]
    if public is None:
        return url_for(endpoint, _external=True, **values)
    path = url_for(endpoint, **values)
    if has_request_context():
        # The public URL says where Atelier's root is reached, prefix included.
        path = path.removeprefix(request.script_root)
    return public + path.lstrip("/")
