"""The JSON API under /api, for scripts and tests. Errors are always
`{"error": {"code", "message", "field"?}}`."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask_wtf.csrf import CSRFError

from app import credentials, csrf, inputs, jobs, library, pricing
from app.auth import sessions
from app.models import Image, Job, JobInput, JobStatus
from app.providers.catalog import Target
from app.validation import ValidationError, parse_idempotency_key
from app.views.helpers import api_error, external_url, json_body

bp = Blueprint("api", __name__, url_prefix="/api")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@bp.before_request
def _forgery_check() -> None:
    """CSRF for the API: a token caller needs none; a cookie caller sends X-CSRFToken.

    With sign-in off nobody sends a cookie or a token, so a browser's cross-site request is
    recognised by its Fetch Metadata or Origin headers (which scripts such as curl don't send).
    """
    if request.method in SAFE_METHODS:
        return
    viewer = sessions.current_viewer()
    if viewer is None or viewer.via == "token":
        return
    if viewer.via == "session":
        csrf.protect()
    elif _cross_site():
        raise CSRFError("A cross-site request may not change anything.")


def _cross_site() -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is not None and origin != request.host_url.rstrip("/")


DEFAULT_LIMIT = 20


@bp.errorhandler(ValidationError)
def _invalid(error: ValidationError) -> tuple[Response, int]:
    return api_error(400, "invalid_request", error.message, error.field)


@bp.errorhandler(jobs.JobError)
def _refused(error: jobs.JobError) -> tuple[Response, int]:
    return api_error(404 if isinstance(error, jobs.JobNotFound) else 409, error.code, error.message)


@bp.errorhandler(jobs.LimitReached)
def _limit_reached(error: jobs.LimitReached) -> tuple[Response, int]:
    """A daily quota or monthly budget is used up: 429, and when it resets."""
    response, status = api_error(429, error.code, error.message)
    response.headers["Retry-After"] = str(error.retry_after)
    return response, status


@bp.get("/estimate")
def estimate_cost() -> Response:
    """The table cost of a job before it is sent: ?provider=&size=&n=&quality=... (the fields
    of POST /api/jobs, options as their own parameters)."""
    parsed = pricing.parse_estimate_request(request.args, current_app.config["ATELIER_TARGETS"])
    return jsonify(
        {
            "cost_usd": parsed.cost,
            "currency": pricing.CURRENCY,
            "provider": parsed.target.id,
            "model": parsed.target.model.name,
            "size": parsed.size,
            "n": parsed.n,
            "options": parsed.options,
            "prices_as_of": pricing.PRICES_AS_OF,
        }
    )


@bp.post("/jobs")
def create_job() -> tuple[Response, int]:
    """A generation, or an edit: multipart/form-data with files `image` (repeated) and `mask`,
    or JSON with `reference_images` (gallery image ids) and `mask` (a data:image/png URL)."""
    targets = current_app.config["ATELIER_TARGETS"]
    if request.mimetype == "multipart/form-data":
        job_request = inputs.request_from_multipart(request.form, request.files, targets)
    else:
        body, problem = json_body()
        if problem is not None or not isinstance(body, dict):
            message = problem or "The request body must be a JSON object."
            return api_error(400, "invalid_json", message)
        job_request = inputs.request_from_json(body, targets)
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    job, created = jobs.create_job(
        job_request, owner_id=sessions.current_user_id(), idempotency_key=key
    )
    return _accepted(job, replayed=not created)


@bp.get("/providers")
def list_providers() -> Response:
    """What each configured provider accepts, for scripts that build their own requests."""
    return jsonify({"items": [target_json(t) for t in current_app.config["ATELIER_TARGETS"]]})


@bp.get("/jobs")
def list_jobs() -> Response:
    page = library.job_page(
        status=request.args.get("status") or None,
        q=(request.args.get("q") or "").strip() or None,
        limit=library.parse_limit(request.args.get("limit"), DEFAULT_LIMIT),
        after=request.args.get("cursor") or None,
    )
    return jsonify(
        {"items": [job_json(job) for job in page.items], "next_cursor": page.next_cursor}
    )


@bp.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> Response:
    job = jobs.get_job(job_id)
    if job is None:
        raise jobs.JobNotFound(job_id)
    return jsonify(job_json(job))


@bp.post("/jobs/<int:job_id>/cancel")
def cancel_job(job_id: int) -> Response:
    return jsonify(job_json(jobs.cancel_job(job_id)))


@bp.post("/jobs/<int:job_id>/retry")
def retry_job(job_id: int) -> tuple[Response, int]:
    return _accepted(jobs.retry_job(job_id, owner_id=sessions.current_user_id()))


@bp.delete("/jobs/<int:job_id>")
def delete_job(job_id: int) -> tuple[str, int]:
    jobs.delete_job(job_id)
    return "", 204


def _accepted(job: Job, *, replayed: bool = False) -> tuple[Response, int]:
    response = jsonify(job_json(job))
    response.headers["Location"] = url_for("api.get_job", job_id=job.id)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 202


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _error(code: str | None, message: str | None) -> dict[str, str] | None:
    return None if code is None else {"code": code, "message": message or ""}


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "phase": job.phase,
        "prompt": job.prompt,
        "provider": job.provider,
        "model": job.model,
        "size": job.size,
        "n": job.n,
        "options": job.options or {},
        "usage": job.usage,
        # US dollars; cost_source: "estimate" (not finished), "usage" or "table" (app.pricing).
        "cost_usd": job.cost_usd,
        "cost_source": job.cost_source,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "error": _error(job.error_code, job.error_message),
        "retry_of": job.parent_id if job.origin == "retry" else None,
        "parent": job.parent_id,
        "origin": job.origin,
        "kind": job.kind,
        "inputs": [input_json(item) for item in job.inputs],
        # The latest partial frame of a streaming job while it runs; null otherwise.
        "preview_url": preview_url(job),
        "images": [image_json(image) for image in job.images],
    }


def input_json(item: JobInput) -> dict[str, Any]:
    return {
        "role": item.role,
        "sha256": item.sha256,
        "url": external_url("files.job_input", input_id=item.id),
        "thumbnail_url": external_url("files.job_input_thumbnail", input_id=item.id),
        "width": item.width,
        "height": item.height,
        "bytes": item.bytes,
        "content_type": item.content_type,
        # The gallery image it was taken from ("edited from"), or null for an upload.
        "source_image": item.source_image_id,
    }


def preview_url(job: Job) -> str | None:
    if job.preview_name is None or job.status != JobStatus.RUNNING:
        return None
    # The frame's index in the URL: each new frame is a new URL, so no cache holds an old one.
    return external_url("files.job_preview", job_id=job.id, frame=job.preview_index or 0)


def target_json(target: Target) -> dict[str, Any]:
    model = target.model
    return {
        "id": target.id,
        "label": target.label,
        "model": model.name,
        "family": model.family,
        "api": target.api,
        "emulated": target.emulated,
        "retired": (
            {"date": model.retired.date, "replacement": model.retired.replacement}
            if model.retired
            else None
        ),
        "sizes": list(model.sizes),
        "default_size": model.default_size,
        # Models with free sizes (gpt-image-2): any WxH within these bounds, besides `sizes`.
        "custom_sizes": dataclasses.asdict(model.size_rule) if model.size_rule else None,
        "transparent_background": model.transparent_background,
        "priced": pricing.known_estimate(model.name, model.default_size, 1) is not None,
        "max_images": model.max_images,
        "max_prompt_chars": model.max_prompt_chars,
        "options": {
            option.name: {
                "default": option.default,
                **({"choices": list(option.choices)} if option.choices else {}),
                **(
                    {"minimum": option.minimum, "maximum": option.maximum}
                    if option.is_number
                    else {}
                ),
            }
            for option in model.options
        },
    }


def image_json(image: Image) -> dict[str, Any]:
    stored = image.file_name is not None
    return {
        "id": image.id,
        "index": image.index,
        "status": image.status,
        "url": external_url("files.image", image_id=image.id) if stored else None,
        "thumbnail_url": external_url("files.thumbnail", image_id=image.id) if stored else None,
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        "bytes": image.bytes,
        "sha256": image.sha256,
        "revised_prompt": image.revised_prompt,
        "filter_results": image.filter_results,
        "error": _error(image.error_code, image.error_message),
        "content_credentials": credentials.api_view(image.content_credentials),
    }
