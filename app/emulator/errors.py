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


def rate_limited(api_version: str, operation: str = "Images_Generations_Create") -> Response:
    """429 with both retry headers (azure-image-apis.md §1.4, §7 item 11).

    `operation` is the name the message gives the throttled operation. Guess (UNCONFIRMED in
    azure-image-apis.md §1.3): every operation name (the deployment route's default
    `Images_Generations_Create` too) and the sentence after "Please retry after 1 second."; the
    rest copies the observed chat 429.
    """
    response = json_response(
        {
            "error": {
                "code": "429",
                "message": (
                    f"Requests to the {operation} Operation under Azure OpenAI API "
                    f"version {api_version} have exceeded call rate limit of your current OpenAI "
                    "S0 pricing tier. Please retry after 1 second. Please go here: "
                    "https://aka.ms/oai/quotaincrease if you would like to further increase the "
                    "default rate limit."
                ),
            }
        },
        status=429,
    )
    response.headers["retry-after"] = "1"
    # Shorter than retry-after on purpose: SDKs prefer retry-after-ms (azure-image-apis.md §4.5),
    # so tests that let an SDK retry stay fast, while clients reading retry-after still work.
    response.headers["retry-after-ms"] = "100"
    response.headers["x-ratelimit-remaining-requests"] = "0"
    return response


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
