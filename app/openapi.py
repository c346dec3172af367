"""The OpenAPI 3.1 description of the JSON API under /api (served at GET /api/openapi.json).

Written by hand as a Python dict, so the lists it names (job and image statuses, option names
and values, page and key limits) come from the code that enforces them instead of being copied.
tests/test_openapi.py checks that its paths and methods match the app's URL map both ways;
tests/test_api_fuzz.py checks real answers against its status codes and schemas.
"""

from __future__ import annotations

from typing import Any

from app import JSON_UPLOAD_BYTES, MAX_REQUEST_BYTES
from app.image_models import AZURE, OPENAI, listed_models
from app.inputs import MAX_IMAGES as MAX_INPUT_IMAGES
from app.library import MAX_PAGE_SIZE
from app.models import ImageStatus, JobPhase, JobStatus
from app.pricing import CURRENCY
from app.validation import CUSTOM_SIZE_FIELDS, MAX_IDEMPOTENCY_KEY_CHARS

VERSION = "0.1.0"
JSON = "application/json"
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
SIZE = {"type": "string", "pattern": r"^(auto|[0-9]+x[0-9]+)$", "examples": ["1024x1024"]}


def _model_options() -> dict[str, dict[str, Any]]:
    """Every option any listed model offers: the union of its choices, or its number range."""
    found: dict[str, dict[str, Any]] = {}
    for model in listed_models(AZURE) + listed_models(OPENAI):
        for option in model.options:
            if option.is_number:
                found[option.name] = {
                    "type": "integer",
                    "minimum": option.minimum,
                    "maximum": option.maximum,
                }
            else:
                known = found.setdefault(option.name, {"type": "string", "enum": []})
                known["enum"] += [c for c in option.choices if c not in known["enum"]]
    return found


def _closed_object(
    properties: dict[str, Any],
    *,
    required: list[str] | None = None,
    nullable: bool = False,
    **annotations: Any,
) -> dict[str, Any]:
    """An object schema with exactly `properties`, every one required unless `required` names
    them; `annotations` (a description) come first, as a reader looks for them there."""
    return {
        "type": ["object", "null"] if nullable else "object",
        **annotations,
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = {
            name: {"$ref": f"#/components/headers/{ref}"} for name, ref in headers.items()
        }
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"$ref": f"#/components/responses/{ERRORS[status]}"} for status in statuses
    }


ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    413: "TooLarge",
    429: "LimitReached",
}

JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _error_response(description: str, **headers: str) -> dict[str, Any]:
    return _json(_ref("Error"), description, **headers)


def _schemas() -> dict[str, Any]:
    options = _model_options()
    error_of_item = _closed_object(
        {"code": {"type": "string"}, "message": {"type": "string"}},
        nullable=True,
        description="Why the job or image failed or was canceled.",
    )
    # What a job request asks for, as a job and an estimate report it back.
    job_parameters = {
        "provider": {"type": "string"},
        "model": {"type": "string"},
        "size": {"type": "string"},
        "n": {"type": "integer"},
        "options": {
            "type": "object",
            "additionalProperties": {"type": ["string", "integer"]},
        },
    }
    return {
        "Error": _closed_object(
            {
                "error": _closed_object(
                    {
                        "code": {"type": "string", "examples": ["invalid_request"]},
                        "message": {"type": "string"},
                        "field": {"type": "string", "examples": ["size", "options.quality"]},
                    },
                    required=["code", "message"],
                )
            },
            description="Every error the API answers: a code, a readable message, and the "
            "input field at fault when there is one.",
        ),
        "Options": {
            "type": "object",
            "description": "Model options; which ones and which values a provider accepts is in "
            "GET /api/providers (an option the model lacks is refused with 400).",
            "properties": options,
            "additionalProperties": False,
        },
        "JobRequest": _closed_object(
            {
                "prompt": {"type": "string", "minLength": 1},
                "provider": {
                    "type": "string",
                    "description": "A provider id from GET /api/providers; the first by default.",
                },
                "size": {
                    **SIZE,
                    "description": "One of the provider's sizes, `auto` where offered, or for "
                    "models with custom sizes any WIDTHxHEIGHT within their bounds.",
                },
                "n": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "options": _ref("Options"),
                "reference_images": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 1,
                    "maxItems": MAX_INPUT_IMAGES,
                    "description": "An edit: ids of gallery images you may see, in order (an id "
                    "you may not see is the same 400 as one that does not exist). The provider's "
                    "model must edit (gpt-image families).",
                },
                "mask": {
                    "type": "string",
                    "pattern": "^data:image/png;base64,",
                    "description": "An edit's mask as a data URL: a PNG with an alpha channel, "
                    "the first image's size, under 4 MB; transparent pixels mark the area to "
                    "change.",
                },
            },
            required=["prompt"],
        ),
        "JobUpload": {
            "type": "object",
            "description": "An edit with uploaded files. Text fields as in JobRequest (options as "
            "a JSON object in text); files `image` (1 to 16, PNG, JPEG or WebP, at most 50 MB "
            "each) and an optional `mask` (a PNG with alpha, the first image's size). The whole "
            "body is limited by ATELIER_MAX_REQUEST_MB (413).",
            "properties": {
                "prompt": {"type": "string", "minLength": 1},
                "provider": {"type": "string"},
                "size": SIZE,
                "n": {"type": "string", "pattern": "^[0-9]+$"},
                "options": {"type": "string", "contentMediaType": JSON},
                "image": {
                    "type": "array",
                    "items": {"type": "string", "contentMediaType": "image/*"},
                    "minItems": 1,
                    "maxItems": MAX_INPUT_IMAGES,
                },
                "mask": {"type": "string", "contentMediaType": "image/png"},
            },
            "required": ["prompt", "image"],
            "additionalProperties": False,
        },
        "JobInput": _closed_object(
            {
                "role": {"type": "string", "enum": ["image", "mask"]},
                "sha256": {"type": "string"},
                "url": {"type": "string", "format": "uri"},
                "thumbnail_url": {"type": "string", "format": "uri"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "bytes": {"type": "integer"},
                "content_type": {
                    "type": "string",
                    "enum": ["image/png", "image/jpeg", "image/webp"],
                },
                "source_image": {
                    **NULLABLE_INTEGER,
                    "description": "The gallery image it was taken from (edited from), or null.",
                },
            },
            description="One file an edit sent, exactly as stored.",
        ),
        "Image": _closed_object(
            {
                "id": {"type": "integer"},
                "index": {"type": "integer"},
                "status": {"type": "string", "enum": _values(ImageStatus)},
                "url": {**NULLABLE_STRING, "format": "uri"},
                "thumbnail_url": {**NULLABLE_STRING, "format": "uri"},
                "content_type": NULLABLE_STRING,
                "width": NULLABLE_INTEGER,
                "height": NULLABLE_INTEGER,
                "bytes": NULLABLE_INTEGER,
                "sha256": NULLABLE_STRING,
                "revised_prompt": NULLABLE_STRING,
                "filter_results": {"type": ["object", "null"]},
                "error": error_of_item,
                "content_credentials": {
                    "oneOf": [{"type": "null"}, _ref("ContentCredentials")],
                    "description": "The file's C2PA Content Credentials as read when it was "
                    "stored; null when it carries no manifest (or was stored before Atelier "
                    "read them).",
                },
            }
        ),
        "ContentCredentials": _closed_object(
            {
                "valid": {
                    "type": "boolean",
                    "description": "The manifest's signature verifies and its data hash "
                    "matches the file's bytes.",
                },
                "trusted": {
                    "type": "boolean",
                    "description": "The signing certificate chains to a configured trust "
                    "anchor (an untrusted signer can still be valid).",
                },
                "generator": {
                    **NULLABLE_STRING,
                    "description": "What made it, e.g. Azure OpenAI or OpenAI API.",
                },
                "signer": {**NULLABLE_STRING, "description": "Who signed (certificate org)."},
                "software_agent": {
                    **NULLABLE_STRING,
                    "description": "The software named by the creating action (the model).",
                },
                "ai_generated": {
                    "type": "boolean",
                    "description": "The manifest declares AI generation (digital source type "
                    "trainedAlgorithmicMedia or compositeWithTrainedAlgorithmicMedia).",
                },
                "signed_at": {
                    **NULLABLE_STRING,
                    "description": "When it was signed: a timestamp authority's time, else the "
                    "time the manifest states.",
                },
                "ingredients": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The titles of the inputs the manifest names (an edit's).",
                },
                "issues": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Why it is not valid, readably; empty when valid.",
                },
            },
            description="An image's C2PA Content Credentials, read once when it was stored.",
        ),
        "Job": _closed_object(
            {
                "id": {"type": "integer"},
                "status": {"type": "string", "enum": list(JobStatus.ALL)},
                "phase": {
                    "type": ["string", "null"],
                    "enum": [*_values(JobPhase), None],
                    "description": "Where a running job is; null otherwise.",
                },
                "prompt": {"type": "string"},
                **job_parameters,
                "usage": {
                    "type": ["object", "null"],
                    "description": "Token usage as the provider reported it.",
                },
                "cost_usd": {"type": ["number", "null"]},
                "cost_source": {
                    "type": ["string", "null"],
                    "enum": ["estimate", "usage", "table", None],
                    "description": "estimate: not finished; usage: from reported usage; table: "
                    "from the price table.",
                },
                "created_at": {"type": "string", "format": "date-time"},
                "started_at": NULLABLE_TIME,
                "finished_at": NULLABLE_TIME,
                "error": error_of_item,
                "retry_of": {**NULLABLE_INTEGER, "description": "The job this one retries."},
                "parent": {**NULLABLE_INTEGER, "description": "The job this one came from."},
                "origin": {**NULLABLE_STRING, "examples": ["retry", "reuse"]},
                "kind": {"type": "string", "enum": ["generate", "edit"]},
                "inputs": {
                    "type": "array",
                    "items": _ref("JobInput"),
                    "description": "An edit's images in order, then its mask; empty otherwise.",
                },
                "preview_url": {
                    **NULLABLE_STRING,
                    "format": "uri",
                    "description": "The latest partial frame while a streaming job runs "
                    "(options.partial_images); null otherwise.",
                },
                "images": {"type": "array", "items": _ref("Image")},
            }
        ),
        "JobPage": _closed_object(
            {
                "items": {"type": "array", "items": _ref("Job")},
                "next_cursor": {
                    **NULLABLE_STRING,
                    "description": "Pass as `cursor` for the next (older) page; null at the end.",
                },
            }
        ),
        "Estimate": _closed_object(
            {
                "cost_usd": {
                    "type": ["number", "null"],
                    "description": "null when the model has no table price.",
                },
                "currency": {"const": CURRENCY},
                **job_parameters,
                "prices_as_of": {"type": "string"},
            }
        ),
        "Provider": _closed_object(
            {
                "id": {"type": "string"},
                "label": {"type": "string"},
                "model": {"type": "string"},
                "family": {"type": "string"},
                "api": {"type": "string"},
                "emulated": {"type": "boolean"},
                "retired": _closed_object(
                    {
                        "date": {"type": "string", "format": "date"},
                        "replacement": NULLABLE_STRING,
                    },
                    nullable=True,
                ),
                "sizes": {"type": "array", "items": {"type": "string"}},
                "default_size": {"type": "string"},
                "custom_sizes": _closed_object(
                    {
                        name: {"type": "integer"}
                        for name in (
                            "multiple",
                            "max_side",
                            "max_ratio",
                            "min_pixels",
                            "max_pixels",
                        )  # fmt: skip
                    },
                    nullable=True,
                    description="Models with free sizes: any WxH within these bounds.",
                ),
                "transparent_background": {"type": "boolean"},
                "priced": {"type": "boolean"},
                "max_images": {"type": "integer"},
                "max_prompt_chars": {"type": "integer"},
                "options": {
                    "type": "object",
                    "additionalProperties": _closed_object(
                        {
                            "default": {"type": ["string", "integer"]},
                            "choices": {"type": "array", "items": {"type": "string"}},
                            "minimum": {"type": "integer"},
                            "maximum": {"type": "integer"},
                        },
                        required=["default"],
                    ),
                },
            }
        ),
    }


def _values(constants: type) -> list[str]:
    return [value for name, value in vars(constants).items() if name.isupper()]


def _estimate_parameters() -> list[dict[str, Any]]:
    """GET /api/estimate takes the fields of a job request, each option as its own parameter."""
    parameters: list[dict[str, Any]] = [
        {"name": "provider", "in": "query", "schema": {"type": "string"}},
        {
            "name": "size",
            "in": "query",
            "schema": {"type": "string"},
            "description": "As in a job request; `custom` takes size_width and size_height.",
        },
        *(
            {"name": name, "in": "query", "schema": {"type": "integer", "minimum": 1}}
            for name in CUSTOM_SIZE_FIELDS
        ),
        {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10}},
    ]
    for name, schema in _model_options().items():
        parameters.append({"name": name, "in": "query", "schema": schema})
    return parameters


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, as a JSON-ready dict."""
    job = _json(_ref("Job"), "The job.")
    accepted = _json(
        _ref("Job"),
        "Accepted: the job is queued; poll its Location until it is final.",
        Location="Location",
    )
    created = _json(
        _ref("Job"),
        "Accepted: the job is queued (or, with Idempotent-Replayed: true, the job an earlier "
        "request with the same Idempotency-Key made).",
        Location="Location",
        **{"Idempotent-Replayed": "IdempotentReplayed"},
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Atelier JSON API",
            "version": VERSION,
            "description": "Image-generation jobs, their images and the configured providers. "
            'Every error is `{"error": {"code", "message", "field"?}}`. Callers authenticate '
            "with an API token (`Authorization: Bearer atl_…`, made on the account page or with "
            "`flask atelier tokens create`); a browser session may be used instead, and then "
            "every POST or DELETE needs the X-CSRFToken header. With sign-in off "
            "(ATELIER_AUTH=off) no token is needed.",
        },
        "security": [{"bearerToken": []}],
        "paths": {
            "/api/openapi.json": {
                "get": {
                    "operationId": "getOpenApiDocument",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "The OpenAPI document.", "content": {JSON: {}}},
                        **_errors(401),
                    },
                }
            },
            "/api/estimate": {
                "get": {
                    "operationId": "estimateCost",
                    "summary": "The table cost of a job before it is sent",
                    "parameters": _estimate_parameters(),
                    "responses": {
                        "200": _json(_ref("Estimate"), "The estimate."),
                        **_errors(400, 401),
                    },
                }
            },
            "/api/providers": {
                "get": {
                    "operationId": "listProviders",
                    "summary": "What each configured provider accepts",
                    "responses": {
                        "200": _json(
                            _closed_object({"items": {"type": "array", "items": _ref("Provider")}}),
                            "The providers, the default first.",
                        ),
                        **_errors(401),
                    },
                }
            },
            "/api/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": "Queue a job",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": "Repeat a request safely: the same key with the "
                            "same body answers the first job (Idempotent-Replayed: true); with "
                            "another body, 409. Keys are per user.",
                            "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {"schema": _ref("JobRequest")},
                            "multipart/form-data": {"schema": _ref("JobUpload")},
                        },
                    },
                    "responses": {"202": created, **_errors(400, 401, 409, 413, 429)},
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs, newest first, a page at a time",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(JobStatus.ALL)},
                        },
                        {
                            "name": "q",
                            "in": "query",
                            "description": "Words the prompt contains.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE_SIZE,
                                "default": 20,
                            },
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "description": "The next_cursor of the previous page.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("JobPage"), "A page of jobs."),
                        **_errors(400, 401),
                    },
                },
            },
            "/api/jobs/{job_id}": {
                "parameters": [JOB_ID],
                "get": {
                    "operationId": "getJob",
                    "summary": "One job and its images",
                    "responses": {"200": job, **_errors(401, 404)},
                },
                "delete": {
                    "operationId": "deleteJob",
                    "summary": "Delete a finished job and its images",
                    "responses": {
                        "204": {"description": "Deleted."},
                        **_errors(401, 404, 409),
                    },
                },
            },
            "/api/jobs/{job_id}/cancel": {
                "parameters": [JOB_ID],
                "post": {
                    "operationId": "cancelJob",
                    "summary": "Cancel a queued or running job",
                    "responses": {
                        "200": _json(_ref("Job"), "The canceled job."),
                        **_errors(401, 404, 409),
                    },
                },
            },
            "/api/jobs/{job_id}/retry": {
                "parameters": [JOB_ID],
                "post": {
                    "operationId": "retryJob",
                    "summary": "Queue a new job with a finished job's parameters",
                    "responses": {"202": accepted, **_errors(401, 404, 409, 429)},
                },
            },
        },
        "components": {
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "atl_…",
                    "description": "An API token: `Authorization: Bearer atl_…`.",
                }
            },
            "headers": {
                "Location": {
                    "description": "The job's URL (GET /api/jobs/{job_id}).",
                    "schema": {"type": "string"},
                },
                "IdempotentReplayed": {
                    "description": "`true` when an earlier job is answered again.",
                    "schema": {"const": "true"},
                },
                "RetryAfter": {
                    "description": "Seconds until the quota or budget resets.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "WWWAuthenticate": {"schema": {"type": "string"}},
            },
            "responses": {
                "BadRequest": _error_response(
                    "The input is refused (`field` names it), the body is not a JSON object, "
                    "or a session caller sent no CSRF token."
                ),
                "Unauthorized": _json(
                    _ref("Error"),
                    "No valid API token or session.",
                    **{"WWW-Authenticate": "WWWAuthenticate"},
                ),
                "NotFound": _error_response("There is no such job (or it is not yours)."),
                "Conflict": _error_response(
                    "The job is in the wrong state for this, or the Idempotency-Key was used "
                    "with another body."
                ),
                "TooLarge": _error_response(
                    f"The body is larger than {MAX_REQUEST_BYTES // 1024} KiB (POST /api/jobs: "
                    f"{JSON_UPLOAD_BYTES // (1024 * 1024)} MB of JSON, or ATELIER_MAX_REQUEST_MB "
                    "of multipart/form-data)."
                ),
                "LimitReached": _json(
                    _ref("Error"),
                    "A daily quota or monthly budget is used up.",
                    **{"Retry-After": "RetryAfter"},
                ),
            },
            "schemas": _schemas(),
        },
    }
