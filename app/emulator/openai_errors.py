"""Error bodies the way OpenAI's own API sends them (azure-image-apis.md §4.4).

Owns OpenAI's envelope `{"error": {"message", "type", "param", "code"}}` and the specific
answers of `/v1`: bad or missing key, invalid values, the safety rejection, rate limits,
server errors and unknown URLs. Azure's bodies live in errors.py; the two never mix.
"""

from __future__ import annotations

from flask import Response

from .errors import SAFETY_REJECTION_MESSAGE, SERVER_ERROR_MESSAGE, json_response, retry_headers

# Guess (not in azure-image-apis.md): the wording of OpenAI's 401 for a missing key.
MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
# Guess (not in azure-image-apis.md): the wording of OpenAI's 400 for a body it cannot parse.
UNPARSABLE_BODY_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
    "not valid JSON.)"
)
# Keys shorter than this are not even partly echoed: their last four characters are too much.
MIN_KEY_LENGTH_TO_HINT = 12


def openai_error(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> Response:
    return json_response(
        {"error": {"message": message, "type": type_, "param": param, "code": code}},
        status=status,
    )


def invalid_request(
    message: str, param: str | None, code: str | None, status: int = 400
) -> Response:
    return openai_error(status, message, "invalid_request_error", param, code)


def missing_api_key() -> Response:
    return invalid_request(MISSING_KEY_MESSAGE, None, None, status=401)


def incorrect_api_key(sent_key: str) -> Response:
    return invalid_request(
        f"Incorrect API key provided: {mask_key(sent_key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        None,
        "invalid_api_key",
        status=401,
    )


def mask_key(key: str) -> str:
    """`sk-...abcd`: never more of the key than its last four characters (plus the `sk-` scheme)."""
    if len(key) < MIN_KEY_LENGTH_TO_HINT:
        return "***"
    prefix = "sk-" if key.startswith("sk-") else ""
    return f"{prefix}...{key[-4:]}"


def invalid_size() -> Response:
    """dall-e-3's answer to an unsupported size, verbatim (azure-image-apis.md §3.4)."""
    return json_response(
        {
            "error": {
                "code": "invalid_size",
                "message": "The size is not supported by this model.",
                "param": None,
                "type": "invalid_request_error",
            }
        },
        status=400,
    )


def content_policy_violation() -> Response:
    """400 for a prompt the safety system rejects, verbatim (azure-image-apis.md §4.4)."""
    return json_response(
        {
            "error": {
                "code": "content_policy_violation",
                "message": SAFETY_REJECTION_MESSAGE,
                "param": None,
                "type": "invalid_request_error",
            }
        },
        status=400,
    )


def rate_limited(retry_seconds: float, *, should_retry: bool | None = None) -> Response:
    """429 with OpenAI's request-limit headers (azure-image-apis.md §4.4), all saying
    `retry_seconds`, and `x-should-retry` when `should_retry` is given (§4.5).

    Guess (the reference quotes the message with "org-…" and "Limit: 0/1min"): the organisation
    `org-emulator`, the numbers and the closing sentence. Guess (§4.4 lists OpenAI's rate-limit
    headers without `retry-after-ms`): OpenAI sends `retry-after` only.
    """
    response = openai_error(
        429,
        "Rate limit exceeded for images per minute in organization org-emulator. Limit: 5/1min. "
        "Current: 6/1min. Please visit https://platform.openai.com/docs/guides/rate-limits to "
        "learn more.",
        "requests",
        None,
        "rate_limit_exceeded",
    )
    after = retry_headers(retry_seconds)["retry-after"]
    response.headers["retry-after"] = after
    response.headers["x-ratelimit-limit-requests"] = "5"
    response.headers["x-ratelimit-remaining-requests"] = "0"
    response.headers["x-ratelimit-reset-requests"] = f"{after}s"
    if should_retry is not None:
        response.headers["x-should-retry"] = "true" if should_retry else "false"
    return response


def server_error() -> Response:
    """Guess (not in azure-image-apis.md): OpenAI's generic 500 body."""
    return openai_error(500, SERVER_ERROR_MESSAGE, "server_error")


def invalid_url(method: str, path: str) -> Response:
    """Guess (not in azure-image-apis.md): OpenAI's 404 for a route it does not have."""
    return invalid_request(f"Invalid URL ({method} {path})", None, None, status=404)
