"""Error bodies the way Azure sends them.

Owns the exact bytes of Azure OpenAI's JSON error envelopes (including the observed quirks:
string status codes, the space after `"message":` in the 404 body) and Azure Storage's XML
errors for the image URLs. Views return these instead of building error bodies themselves, so
every route fails in the same shape.
"""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

from flask import Response

# Observed verbatim on Azure (azure-image-apis.md §1.3); kept as literal text, not re-serialised,
# because clients and people compare these strings.
ACCESS_DENIED_BODY = (
    '{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong '
    "API endpoint. Make sure to provide a valid key for an active subscription and use a correct "
    'regional API endpoint for your resource."}}'
)
# Note the space after "message": Azure really sends it (azure-image-apis.md §1.3, §7 item 10).
RESOURCE_NOT_FOUND_BODY = '{"error":{"code":"404","message": "Resource not found"}}'
# Captured fixture of a missing deployment (azure-image-apis.md §1.3).
DEPLOYMENT_NOT_FOUND_BODY = (
    '{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does '
    "not exist. If you created the deployment within the last 5 minutes, please wait a moment "
    'and try again."}}'
)
SAFETY_REJECTION_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system."
)
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def json_response(payload: object, status: int = 200) -> Response:
    """Compact JSON in insertion order, like Azure (Flask's jsonify would sort the keys)."""
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, mimetype="application/json")


def access_denied() -> Response:
    """401 for a missing or wrong key."""
    return Response(ACCESS_DENIED_BODY, status=401, mimetype="application/json")


def resource_not_found() -> Response:
    """404 for an unknown route, unsupported api-version or unknown operation."""
    return Response(RESOURCE_NOT_FOUND_BODY, status=404, mimetype="application/json")


def deployment_not_found() -> Response:
    """404 for a deployment name the resource does not have."""
    return Response(DEPLOYMENT_NOT_FOUND_BODY, status=404, mimetype="application/json")


def invalid_request(status: int, code: str, message: str, param: str | None) -> Response:
    """A deployment-route request the service refuses (bad field, body or api-version).

    Guess (UNCONFIRMED in azure-image-apis.md §3.4, §8: Azure's body for an invalid size or n
    is not sourced): OpenAI's envelope in the key order of the §3.4 examples.
    """
    return json_response(
        {
            "error": {
                "code": code,
                "message": message,
                "param": param,
                "type": "invalid_request_error",
            }
        },
        status=status,
    )


def content_policy_violation() -> Response:
    """400 for a rejected prompt, shape (b) of azure-image-apis.md §3.4 (observed 2025-2026).

    Guess (the reference's example only carries `jailbreak`; §3.4 says `inner_error` can carry
    the full category map): the full map, with `sexual` as the category that was filtered.
    """
    safe = {"filtered": False, "severity": "safe"}
    return json_response(
        {
            "error": {
                "code": "content_policy_violation",
                "inner_error": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_results": {
                        "jailbreak": {"detected": False, "filtered": False},
                        "sexual": {"filtered": True, "severity": "high"},
                        "violence": safe,
                        "hate": safe,
                        "self_harm": safe,
                    },
                },
                "message": SAFETY_REJECTION_MESSAGE,
                "type": "invalid_request_error",
            }
        },
        status=400,
    )


def legacy_content_filter(created: int, message: str) -> Response:
    """400 shape (a) of azure-image-apis.md §3.4: `{"created", "error": {"code": "contentFilter"}}`.

    The message says whether the prompt was refused or the generated image was filtered.
    """
    return json_response(
        {"created": created, "error": {"code": "contentFilter", "message": message}},
        status=400,
    )


def rate_limited(
    api_version: str,
    retry_seconds: float,
    operation: str = "Images_Generations_Create",
    *,
    should_retry: bool | None = None,
) -> Response:
    """429 with both retry headers (azure-image-apis.md §1.4, §7 item 11), both saying
    `retry_seconds`.

    `operation` is the name the message gives the throttled operation. Guess (UNCONFIRMED in
    azure-image-apis.md §1.3): every operation name (the deployment route's default
    `Images_Generations_Create` too) and the sentence after "Please retry after N seconds.";
    the rest copies the observed chat 429. `should_retry` adds `x-should-retry: true/false`,
    the header openai-python obeys over the status code (azure-image-apis.md §4.5, §7 item 11).
    Guess (not in azure-image-apis.md): whether Azure itself ever sends it.
    """
    headers = retry_headers(retry_seconds)
    after = headers["retry-after"]
    response = json_response(
        {
            "error": {
                "code": "429",
                "message": (
                    f"Requests to the {operation} Operation under Azure OpenAI API "
                    f"version {api_version} have exceeded call rate limit of your current OpenAI "
                    f"S0 pricing tier. Please retry after {after} {_seconds(after)}. Please go "
                    "here: https://aka.ms/oai/quotaincrease if you would like to further increase "
                    "the default rate limit."
                ),
            }
        },
        status=429,
    )
    response.headers.update(headers)
    response.headers["x-ratelimit-remaining-requests"] = "0"
    if should_retry is not None:
        response.headers["x-should-retry"] = "true" if should_retry else "false"
    return response


def retry_headers(seconds: float) -> dict[str, str]:
    """`retry-after` (seconds) and `retry-after-ms` for the same wait, so the two always agree.

    Clients differ in which one they read (openai-python and Atelier prefer `retry-after-ms`,
    azure-image-apis.md §4.5), and headers that disagree make the same client wait differently
    against the emulator than a reader of the other header would. `retry-after` is whole
    seconds in HTTP (RFC 9110 delay-seconds) and with the default configuration it is one. Only
    a configured fraction (tests use 0.1 s to stay fast) is written as a decimal, "0.1":
    openai-python parses `retry-after` as a float on purpose ("allowing nonstandard floats"),
    and so does Atelier's provider; a client doing int() on it would fail only then.
    """
    milliseconds = round(seconds * 1000)
    whole, fraction = divmod(milliseconds, 1000)
    after = str(whole) if fraction == 0 else f"{whole}.{fraction:03d}".rstrip("0")
    return {"retry-after": after, "retry-after-ms": str(milliseconds)}


def _seconds(amount: str) -> str:
    return "second" if amount == "1" else "seconds"


def internal_server_error() -> Response:
    """500 for a generation that broke on the server.

    Guess (not in azure-image-apis.md): the body of Azure OpenAI's generic 500.
    """
    return json_response(
        {"error": {"code": "InternalServerError", "message": SERVER_ERROR_MESSAGE}},
        status=500,
    )


def azure_error(status: int, code: str, message: str, target: str | None = None) -> Response:
    """Azure.Core.Foundations.ErrorResponse: {"error": {"code", "message", "target"?}}."""
    error: dict[str, str] = {"code": code, "message": message}
    if target is not None:
        error["target"] = target
    return json_response({"error": error}, status=status)


def storage_error(status: int, code: str, message: str, detail: str | None = None) -> Response:
    """Azure Storage's XML error, as a blob SAS URL answers when it cannot serve the blob."""
    detail_xml = (
        f"<AuthenticationErrorDetail>{escape(detail)}</AuthenticationErrorDetail>" if detail else ""
    )
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>{detail_xml}</Error>"
    )
    return Response(body, status=status, mimetype="application/xml")


def authentication_failed(detail: str | None = None) -> Response:
    """403 for a missing, wrong or expired SAS signature."""
    return storage_error(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request.",
        detail,
    )


def blob_not_found() -> Response:
    """404 for an image that does not exist (unknown, deleted, filtered or not yet generated)."""
    return storage_error(404, "BlobNotFound", "The specified blob does not exist.")
