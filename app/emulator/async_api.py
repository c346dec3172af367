"""The retired asynchronous DALL-E 2 API (azure-image-apis.md §2), route by route.

Owns the three `/openai` routes of the api-versions 2023-06-01-preview to 2023-10-01-preview:
- `POST /openai/images/generations:submit` validates the body and answers 202 with an
  absolute `operation-location`;
- `GET /openai/operations/images/{id}` reports the operation as it stands now;
- `DELETE /openai/operations/images/{id}` removes a finished operation and its images.
Authentication and `apim-request-id` are handled before these views run (see gateway.py);
the fault triggers these routes act on are parsed in faults.py.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from flask import Blueprint, Response, abort, request

from .blobs import blob_url
from .errors import (
    azure_error,
    internal_server_error,
    json_response,
    rate_limited,
    resource_not_found,
)
from .fault_responses import garbage_operation
from .faults import Fault, has_vanished, poll_fault, submit_fault
from .image_requests import InvalidRequest, read_json_object
from .operations import Operation, Outcome
from .request_log import mark_request_kind
from .state import EmulatorState, emulator_state

# The versions that carried the async API: added in 2023-06-01-preview, removed in
# 2023-12-01-preview (azure-image-apis.md §2.1).
ASYNC_API_VERSIONS = frozenset(
    {
        "2023-06-01-preview",
        "2023-07-01-preview",
        "2023-08-01-preview",
        "2023-09-01-preview",
        "2023-10-01-preview",
    }
)
# Azure's own examples put 2023-06-01-preview into operation-location whatever version was submitted
# with (azure-image-apis.md §2.3). Copying that makes clients poll the URL as given instead of
# rebuilding it, which is what real clients have to do.
OPERATION_LOCATION_API_VERSION = "2023-06-01-preview"

MAX_PROMPT_CHARS = 1000
# CONFLICT in azure-image-apis.md §2.2: reference.md says 1-5, dall-e.md and the TypeSpec say 1-10.
# Accepting 1-10 never rejects a request the real service would have taken.
MAX_IMAGES = 10
SIZES = ("256x256", "512x512", "1024x1024")
RESPONSE_FORMATS = ("url", "b64_json")

FAILURE_ERRORS = {
    # azure-image-apis.md §2.6: a rejected prompt is a failed operation, not an HTTP error.
    Outcome.REFUSE: {
        "code": "contentFilter",
        "message": "Your task failed as a result of our safety system.",
    },
    # Guess (UNCONFIRMED in azure-image-apis.md §2.6): the code is in the generated client's
    # error-code enum; the message wording is ours.
    Outcome.FAIL: {
        "code": "internalFailure",
        "message": "The image generation failed because of an internal error.",
    },
}
# Guess (UNCONFIRMED in azure-image-apis.md §1.3, §8: no 429 of this API was ever quoted): the
# operation names a throttled submit and a throttled poll give in the 429 message.
SUBMIT_OPERATION_NAME = "ImageGenerations_Submit"
POLL_OPERATION_NAME = "ImageGenerations_GetOperation"
FILTERED_IMAGE_ERROR = {
    "code": "contentFilter",
    "message": "Generated image was filtered as a result of our safety system.",
}

bp = Blueprint("emulator_async", __name__, url_prefix="/openai")


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    n: int
    size: str
    response_format: str


@bp.before_request
def require_async_api_version() -> Response | None:
    version = request.args.get("api-version")
    if version is None:
        # Guess (UNCONFIRMED in azure-image-apis.md §1.1): the spec only says api-version is
        # required; we answer its absence like an unsupported version.
        return resource_not_found()
    if version not in ASYNC_API_VERSIONS:
        # azure-image-apis.md §1.3: an api-version without this route is "Resource not found".
        return resource_not_found()
    return None


@bp.post("/images/generations:submit")
def submit_generation() -> Response:
    mark_request_kind("submit")
    state = emulator_state()
    try:
        generation = parse_generation_request(read_json_object())
    except InvalidRequest as invalid:
        # Guess (UNCONFIRMED in azure-image-apis.md §8): Azure's body for an invalid async submit is
        # not sourced; we use the Azure.Core error envelope with code invalidPayload (from the
        # generated client's error-code enum, §2.6) and the field as `target` ("body" when the
        # body as a whole is unreadable).
        target = invalid.param or "body"
        return azure_error(invalid.status, "invalidPayload", invalid.message, target=target)

    # Guess: faults act only on valid submits (the real gateway would throttle before it
    # validates, but the emulator needs a valid prompt to find the trigger in).
    fault = submit_fault(state.fault_memory, generation.prompt)
    if fault is Fault.SUBMIT_429:
        return rate_limited(
            request.args["api-version"],
            state.config.rate_limit_retry_seconds,
            SUBMIT_OPERATION_NAME,
        )
    if fault is Fault.SUBMIT_500:
        return internal_server_error()

    operation = state.store.create(
        prompt=generation.prompt,
        n=generation.n,
        size=generation.size,
        response_format=generation.response_format,
        latency=state.config.latency,
    )
    response = json_response(
        {"id": operation.id, "status": "notRunning", "created": operation.created},
        status=202,
    )
    response.headers["operation-location"] = (
        f"{_base_url(state)}openai/operations/images/{operation.id}"
        f"?api-version={OPERATION_LOCATION_API_VERSION}"
    )
    # Guess (UNCONFIRMED in azure-image-apis.md §2.3): retry-after on the 202 itself; an early
    # portal sample read it, and clients that do not expect it ignore it.
    return _with_poll_interval(state, response)


@bp.get("/operations/images/<operation_id>")
def get_operation(operation_id: str) -> Response:
    state, operation = _requested_operation("poll", operation_id)
    fault = poll_fault(state.fault_memory, operation.id, operation.prompt)
    if fault is Fault.POLL_429:
        return rate_limited(
            request.args["api-version"], state.config.rate_limit_retry_seconds, POLL_OPERATION_NAME
        )
    if fault is Fault.POLL_500:
        return internal_server_error()
    if fault is Fault.POLL_SLOW:
        # Each request has its own thread (see server.py), so this holds up only this poll.
        time.sleep(state.config.slow_seconds)
    body = operation_body(state, operation)
    response = garbage_operation(body) if fault is Fault.POLL_GARBAGE else json_response(body)
    # Sent on every poll, terminal or not: clients sleep int(retry-after) and Microsoft's own sample
    # crashes without it (azure-image-apis.md §2.9, §7 item 7).
    return _with_poll_interval(state, response)


@bp.delete("/operations/images/<operation_id>")
def delete_operation(operation_id: str) -> Response:
    state, operation = _requested_operation("delete", operation_id)
    if operation.status_at(state.store.clock()) in ("notRunning", "running"):
        # Guess (UNCONFIRMED in azure-image-apis.md §2.7): the docs only say delete succeeds in an
        # end state; 409 `conflict` comes from the generated client's error-code enum.
        return azure_error(
            409,
            "conflict",
            "The operation is not in a terminal state and cannot be deleted.",
        )
    # Guess (UNCONFIRMED in azure-image-apis.md §2.7): deleting an already deleted operation answers
    # 204 again (idempotent delete) rather than 404.
    state.store.mark_deleted(operation.id)
    return Response(status=204)


def parse_generation_request(payload: dict[str, object]) -> GenerationRequest:
    """Validate a submit body; raises InvalidRequest naming the first bad field."""
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' is required and must be a string.", "prompt")
    if not prompt.strip():
        raise InvalidRequest("'prompt' must not be empty.", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"'prompt' is {len(prompt)} characters long; the maximum is {MAX_PROMPT_CHARS}.",
            "prompt",
        )

    # JSON null counts as "not given" for every optional field, as in OpenAI's APIs.
    n = payload.get("n")
    if n is None:
        n = 1
    # bool is a subclass of int in Python; `true` must not pass as 1.
    if type(n) is not int or not 1 <= n <= MAX_IMAGES:
        raise InvalidRequest(f"'n' must be an integer between 1 and {MAX_IMAGES}.", "n")

    size = payload.get("size")
    if size is None:
        size = "1024x1024"
    if size not in SIZES:
        raise InvalidRequest(f"'size' must be one of {', '.join(SIZES)}.", "size")

    response_format = payload.get("response_format")
    if response_format is None:
        response_format = "url"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(
            f"'response_format' must be one of {', '.join(RESPONSE_FORMATS)}.",
            "response_format",
        )

    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", "user")

    model = payload.get("model")
    # "If not specified, dall-e-2 will be inferred" (azure-image-apis.md §2.2): no other model ever
    # ran on this route.
    if model is not None and model != "dall-e-2":
        raise InvalidRequest("'model' must be 'dall-e-2' on this API.", "model")

    return GenerationRequest(prompt=prompt, n=n, size=size, response_format=response_format)


def operation_body(state: EmulatorState, operation: Operation) -> dict[str, object]:
    """The poll response for `operation` as of now."""
    status = operation.status_at(state.store.clock())
    body: dict[str, object] = {
        "id": operation.id,
        "created": operation.created,
        "expires": operation.expires,
        "status": status,
    }
    if status == "succeeded":
        body["result"] = {
            "created": operation.finished,
            "data": [_image_entry(state, operation, index) for index in range(operation.n)],
        }
    elif status == "failed":
        body["error"] = FAILURE_ERRORS[operation.outcome]
    return body


def _image_entry(state: EmulatorState, operation: Operation, index: int) -> dict[str, object]:
    # Per-slot error, as in the TypeSpec's ImageLocation (azure-image-apis.md §2.6).
    if operation.is_filtered(index):
        return {"error": FILTERED_IMAGE_ERROR}
    if operation.response_format == "b64_json":
        # Guess (UNCONFIRMED in azure-image-apis.md §2.2): that the async service honoured b64_json;
        # it is in the TypeSpec, so we serve it.
        png = state.images.get(operation, index)
        return {"b64_json": base64.b64encode(png).decode("ascii")}
    return {"url": blob_url(_base_url(state), state.signing_secret, operation, index)}


def _requested_operation(kind: str, operation_id: str) -> tuple[EmulatorState, Operation]:
    """Count this request as a `kind` ("poll" or "delete") and find the operation it acts on;
    the request is answered 404 instead when the id is unknown or expired, made by a
    synchronous route, or its prompt has `[vanish]`.

    Guess (UNCONFIRMED in azure-image-apis.md §2.6, §2.7): an unknown or expired id gets the
    generic 404. A vanished operation is gone for a delete as much as for a poll: a client
    cleaning up must cope with 404 too.
    """
    mark_request_kind(kind)
    state = emulator_state()
    operation = state.store.get(operation_id)
    if operation is None or operation.synchronous or has_vanished(operation.prompt):
        abort(resource_not_found())
    return state, operation


def _with_poll_interval(state: EmulatorState, response: Response) -> Response:
    """`response` with `retry-after`: how long clients should wait before the next poll."""
    response.headers["retry-after"] = str(state.config.poll_interval)
    return response


def _base_url(state: EmulatorState) -> str:
    return state.config.public_url or request.host_url
