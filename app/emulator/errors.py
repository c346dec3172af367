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
